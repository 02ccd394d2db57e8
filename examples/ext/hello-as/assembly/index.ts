// hello-as: a hanzocloud extension written in AssemblyScript.
//
// `handle` greets the caller and echoes the whole request envelope back:
//   {"status": S, "headers": {...}, "body": {"greeting", "org", "envelope"}}
// S comes from the request header `x-echo-status` (100-599) when present, else 200, and a
// request header `x-echo-header` is copied into the response headers.

@external("hanzo", "log")
declare function hostLog(ptr: usize, len: usize): void;

// --- ABI: the host allocates the input with `alloc` and frees input and output with `dealloc`.

export function alloc(len: i32): i32 {
  return <i32>heap.alloc(<usize>max(len, 1));
}

export function dealloc(ptr: i32, len: i32): void {
  heap.free(<usize>ptr);
}

function log(message: string): void {
  const buf = String.UTF8.encode(message);
  hostLog(changetype<usize>(buf), <usize>buf.byteLength);
}

// Wired in with `--use abort=assembly/index/onAbort`: report through the host, then trap.
function onAbort(message: string | null, file: string | null, line: u32, column: u32): void {
  log("abort: " + (message ? message : "") + " at " + (file ? file : "?") + ":" +
      line.toString() + ":" + column.toString());
  unreachable();
}

// --- a minimal scan of the envelope: enough to read a few string fields.

// The raw (still JSON-escaped) content of the string value that follows `"key":"` at `at`.
function rawStringAt(json: string, at: i32): string {
  let i = at;
  while (i < json.length) {
    const c = json.charCodeAt(i);
    if (c == 34) break; // closing quote
    i += c == 92 ? 2 : 1; // skip escaped characters
  }
  return json.substring(at, i);
}

// Value of the string field `key` after position `from`; `last` picks the last occurrence.
function field(json: string, key: string, from: i32, last: bool): string | null {
  const pattern = "\"" + key + "\":\"";
  const at = last ? json.lastIndexOf(pattern) : json.indexOf(pattern, from);
  if (at < from) return null;
  return rawStringAt(json, at + pattern.length);
}

function requestedStatus(value: string | null): i32 {
  if (value == null || value.length != 3) return 200;
  let status = 0;
  for (let i = 0; i < 3; i++) {
    const c = value.charCodeAt(i);
    if (c < 48 || c > 57) return 200;
    status = status * 10 + (c - 48);
  }
  return status >= 100 && status <= 599 ? status : 200;
}

export function handle(ptr: i32, len: i32): i64 {
  const input = String.UTF8.decodeUnsafe(<usize>ptr, <usize>len);
  const headersAt = input.indexOf("\"headers\":{");
  const from = headersAt < 0 ? input.length : headersAt;
  const status = requestedStatus(field(input, "x-echo-status", from, false));
  const echoHeader = field(input, "x-echo-header", from, false);
  // org, user and userEmail are the envelope's last fields, so their last match is theirs.
  const org = field(input, "org", 0, true);
  const user = field(input, "user", 0, true);

  let headers = "{\"content-type\":\"application/json\",\"x-guest\":\"assemblyscript\"";
  if (echoHeader != null) headers += ",\"x-echo-header\":\"" + echoHeader + "\"";
  headers += "}";
  const who = user != null && user.length > 0 ? user : "anonymous";
  const body = "{\"greeting\":\"hello, " + who + "\",\"org\":\"" + (org != null ? org : "") +
               "\",\"envelope\":" + input + "}";
  const output = "{\"status\":" + status.toString() + ",\"headers\":" + headers +
                 ",\"body\":" + body + "}";

  const encoded = String.UTF8.encode(output);
  const size = <usize>encoded.byteLength;
  const dst = heap.alloc(max(size, 1));
  memory.copy(dst, changetype<usize>(encoded), size);
  return (<i64>dst << 32) | <i64>size;
}
