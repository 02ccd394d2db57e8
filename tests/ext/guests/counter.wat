;; Keeps a counter in a global: visible state that must never cross orgs.
;; `bump` returns {"status":200,"headers":{},"body":{"count":N}}; `crash` bumps then traps.
(module
  (memory (export "memory") 1)
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 16) "{\"status\":200,\"headers\":{},\"body\":{\"count\":")  ;; 43 bytes, digits follow at 59
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "dealloc") (param i32 i32))
  ;; decimal digits of $n written at $at; returns the number of bytes
  (func $itoa (param $n i32) (param $at i32) (result i32)
    (local $digits i32) (local $m i32) (local $i i32)
    (local.set $m (local.get $n))
    (local.set $digits (i32.const 1))
    (block $done (loop $count
      (br_if $done (i32.lt_u (local.get $m) (i32.const 10)))
      (local.set $m (i32.div_u (local.get $m) (i32.const 10)))
      (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
      (br $count)))
    (local.set $i (local.get $digits))
    (local.set $m (local.get $n))
    (loop $write
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $at) (local.get $i))
                  (i32.add (i32.const 48) (i32.rem_u (local.get $m) (i32.const 10))))
      (local.set $m (i32.div_u (local.get $m) (i32.const 10)))
      (br_if $write (i32.gt_u (local.get $i) (i32.const 0))))
    (local.get $digits))
  (func $bump (export "bump") (param i32 i32) (result i64)
    (local $n i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (local.set $n (call $itoa (global.get $count) (i32.const 59)))
    (i32.store16 (i32.add (i32.const 59) (local.get $n)) (i32.const 0x7d7d))  ;; "}}"
    (i64.or (i64.shl (i64.const 16) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.const 45) (local.get $n)))))
  (func (export "crash") (param i32 i32) (result i64)
    (drop (call $bump (i32.const 0) (i32.const 0)))
    unreachable))
