;; Executes `unreachable`: a plain trap.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func (export "boom") (param i32 i32) (result i64)
    unreachable)
  (data (i32.const 512) "{\"status\":200,\"body\":\"ok\"}")  ;; 26
  (func (export "ok") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 26))))
