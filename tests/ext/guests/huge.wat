;; Produces 2 MiB of perfectly valid JSON (spaces, then "{}"): too big for the output limit.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func (export "flood") (param i32 i32) (result i64)
    (local $base i32) (local $len i32)
    (local.set $len (i32.const 2097152))
    (local.set $base (i32.mul (memory.grow (i32.const 33)) (i32.const 65536)))
    (memory.fill (local.get $base) (i32.const 32) (local.get $len))
    (i32.store16 (i32.sub (i32.add (local.get $base) (local.get $len)) (i32.const 2))
                 (i32.const 0x7d7b))  ;; "{}" little-endian
    (i64.or (i64.shl (i64.extend_i32_u (local.get $base)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))
  (data (i32.const 512) "{\"status\":200,\"body\":\"ok\"}")  ;; 26
  (func (export "ok") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 26))))
