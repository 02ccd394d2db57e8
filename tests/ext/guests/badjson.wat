;; Returns bytes that are not JSON, and a JSON value that is not an object.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"status\": 200, oops")   ;; 20 bytes
  (data (i32.const 48) "[1,2,3]")                   ;; 7 bytes
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func (export "garbage") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 20)))
  (func (export "array") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 48) (i64.const 32)) (i64.const 7)))
  (func (export "wild") (param i32 i32) (result i64)
    ;; a pointer far outside its 64 KiB memory
    (i64.or (i64.shl (i64.const 0x7fff0000) (i64.const 32)) (i64.const 16)))
  (data (i32.const 512) "{\"status\":200,\"body\":\"ok\"}")  ;; 26
  (func (export "ok") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 26))))
