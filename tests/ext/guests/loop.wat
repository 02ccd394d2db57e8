;; Never returns: stopped by the wall-clock deadline (epoch) or by fuel.
;; Every misbehaving guest also exports `ok`, to show the next call still works.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func (export "spin") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0))
  (data (i32.const 512) "{\"status\":200,\"body\":\"ok\"}")  ;; 26
  (func (export "ok") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 26))))
