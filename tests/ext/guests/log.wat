;; Logs through the host. `say` logs its input; `chatty` logs 500 lines; `wild` passes a
;; pointer outside its memory, which the host refuses by stopping the call.
(module
  (import "hanzo" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"status\":204}")  ;; 14
  (data (i32.const 32) "chatty line")       ;; 11
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32))
  (func $done (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 14)))
  (func (export "say") (param $in i32) (param $len i32) (result i64)
    (call $log (local.get $in) (local.get $len))
    (call $done))
  (func (export "chatty") (param i32 i32) (result i64)
    (local $i i32)
    (loop $again
      (call $log (i32.const 32) (i32.const 11))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 500))))
    (call $done))
  (func (export "wild") (param i32 i32) (result i64)
    (call $log (i32.const 0x7fff0000) (i32.const 10))
    (call $done)))
