;; Uses the org's key-value store. `put` stores the whole input under "note";
;; `get` answers with the stored note as the body, or 404.
(module
  (import "hanzo" "kv_get" (func $kv_get (param i32 i32) (result i64)))
  (import "hanzo" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16)  "note")                                   ;; 4
  (data (i32.const 32)  "{\"status\":201,\"body\":\"stored\"}")   ;; 30
  (data (i32.const 80)  "{\"status\":404,\"body\":null}")         ;; 26
  (data (i32.const 112) "{\"status\":500,\"body\":\"kv failed\"}") ;; 33
  (data (i32.const 160) "{\"status\":200,\"body\":")              ;; 21
  (global $top (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (global.get $top))
    (local.set $end (i32.and (i32.add (i32.add (local.get $ptr) (local.get $len)) (i32.const 7))
                             (i32.const -8)))
    (block $fits
      (br_if $fits (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
      (br_if $fits (i32.ne (memory.grow (i32.add (i32.shr_u (local.get $len) (i32.const 16))
                                                 (i32.const 1)))
                           (i32.const -1)))
      (return (i32.const 0)))
    (global.set $top (local.get $end))
    (local.get $ptr))
  (func (export "dealloc") (param i32 i32))
  (func $static (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))
  (func (export "put") (param $in i32) (param $len i32) (result i64)
    (if (result i64) (i32.eqz (call $kv_set (i32.const 16) (i32.const 4) (local.get $in) (local.get $len)))
      (then (call $static (i32.const 32) (i32.const 30)))
      (else (call $static (i32.const 112) (i32.const 33)))))
  (func (export "get") (param i32 i32) (result i64)
    (local $r i64) (local $vptr i32) (local $vlen i32) (local $out i32)
    (local.set $r (call $kv_get (i32.const 16) (i32.const 4)))
    (if (i64.eq (local.get $r) (i64.const -1))
      (then (return (call $static (i32.const 80) (i32.const 26)))))
    (if (i64.lt_s (local.get $r) (i64.const 0))
      (then (return (call $static (i32.const 112) (i32.const 33)))))
    (local.set $vptr (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32))))
    (local.set $vlen (i32.wrap_i64 (local.get $r)))
    (local.set $out (call $alloc (i32.add (local.get $vlen) (i32.const 22))))
    (memory.copy (local.get $out) (i32.const 160) (i32.const 21))
    (memory.copy (i32.add (local.get $out) (i32.const 21)) (local.get $vptr) (local.get $vlen))
    (i32.store8 (i32.add (local.get $out) (i32.add (local.get $vlen) (i32.const 21))) (i32.const 125))
    (call $static (local.get $out) (i32.add (local.get $vlen) (i32.const 22)))))
