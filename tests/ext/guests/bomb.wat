;; Grows memory one page at a time until the host refuses, then aborts like an allocator
;; that cannot get memory would.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func (export "explode") (param i32 i32) (result i64)
    (loop $more
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
        (then unreachable))
      (br $more))
    (i64.const 0))
  (data (i32.const 512) "{\"status\":200,\"body\":\"ok\"}")  ;; 26
  (func (export "ok") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 26))))
