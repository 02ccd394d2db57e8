;; A hook guest: `allow` and `deny` answer with fixed verdicts; `modify` returns its whole
;; input as the record; `confused` returns an action the host does not know.
(module
  (memory (export "memory") 1)
  (data (i32.const 16)  "{\"action\":\"allow\"}")                                          ;; 18
  (data (i32.const 48)  "{\"action\":\"deny\",\"message\":\"amount over limit\",\"headers\":{\"x-policy\":\"limits\"}}") ;; 79
  (data (i32.const 160) "{\"action\":\"modify\",\"record\":")                               ;; 28
  (data (i32.const 192) "{\"action\":\"maybe\"}")                                          ;; 18
  (global $top (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $top))
    (global.set $top (i32.add (local.get $ptr) (local.get $len)))
    (local.get $ptr))
  (func (export "dealloc") (param $ptr i32) (param $len i32)
    (if (i32.eq (i32.add (local.get $ptr) (local.get $len)) (global.get $top))
      (then (global.set $top (local.get $ptr)))))
  (func $packed (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))
  (func (export "allow") (param i32 i32) (result i64) (call $packed (i32.const 16) (i32.const 18)))
  (func (export "deny") (param i32 i32) (result i64) (call $packed (i32.const 48) (i32.const 79)))
  (func (export "confused") (param i32 i32) (result i64) (call $packed (i32.const 192) (i32.const 18)))
  (func (export "modify") (param $in i32) (param $len i32) (result i64)
    (local $out i32)
    (local.set $out (call $alloc (i32.add (local.get $len) (i32.const 29))))
    (memory.copy (local.get $out) (i32.const 160) (i32.const 28))
    (memory.copy (i32.add (local.get $out) (i32.const 28)) (local.get $in) (local.get $len))
    (i32.store8 (i32.add (local.get $out) (i32.add (local.get $len) (i32.const 28))) (i32.const 125))
    (call $packed (local.get $out) (i32.add (local.get $len) (i32.const 29)))))
