;; echo-wat: a complete hanzocloud extension written by hand in WebAssembly text.
;;
;; Export `handle` answers every request with
;;   {"status": S, "headers": {...}, "body": <the whole request envelope>}
;; S is taken from the request header `x-echo-status` (three digits, 100-599) when present,
;; else 200. A request header `x-echo-header` is copied into the response headers.
(module
  (memory (export "memory") 1)

  ;; constant strings (offset, length noted beside each)
  (data (i32.const 64)  "{\"status\":")                                        ;; 64, 10
  (data (i32.const 80)  ",\"headers\":{\"content-type\":\"application/json\",\"x-echo\":\"wat\"") ;; 80, 60
  (data (i32.const 144) ",\"x-echo-header\":\"")                                ;; 144, 18
  (data (i32.const 176) "},\"body\":")                                          ;; 176, 9
  (data (i32.const 192) "\"headers\":{")                                        ;; 192, 11
  (data (i32.const 208) "\"x-echo-status\":\"")                                 ;; 208, 17
  (data (i32.const 240) "\"x-echo-header\":\"")                                 ;; 240, 17
  (data (i32.const 272) "200")                                                  ;; 272, 3

  ;; bump allocator; freeing the most recent block gives its memory back
  (global $top (mut i32) (i32.const 1024))

  (func $align8 (param $n i32) (result i32)
    (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8)))

  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32) (local $have i32)
    (local.set $ptr (global.get $top))
    (local.set $end (call $align8 (i32.add (local.get $ptr) (local.get $len))))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u
                  (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                  (i32.const 16)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $top (local.get $end))
    (local.get $ptr))

  (func (export "dealloc") (param $ptr i32) (param $len i32)
    (if (i32.eq (call $align8 (i32.add (local.get $ptr) (local.get $len))) (global.get $top))
      (then (global.set $top (local.get $ptr)))))

  ;; index of the first occurrence of pat[0..plen) in [from, end), or -1
  (func $find (param $from i32) (param $end i32) (param $pat i32) (param $plen i32) (result i32)
    (local $i i32) (local $j i32)
    (local.set $i (local.get $from))
    (block $none
      (loop $scan
        (br_if $none (i32.gt_u (i32.add (local.get $i) (local.get $plen)) (local.get $end)))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $cmp
            (br_if $mismatch
              (i32.ne (i32.load8_u (i32.add (local.get $i) (local.get $j)))
                      (i32.load8_u (i32.add (local.get $pat) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br_if $cmp (i32.lt_u (local.get $j) (local.get $plen))))
          (return (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (i32.const -1))

  ;; end of the JSON string content starting at $i (the index of its closing quote)
  (func $string_end (param $i i32) (param $end i32) (result i32)
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (br_if $done (i32.eq (i32.load8_u (local.get $i)) (i32.const 34)))
        (if (i32.eq (i32.load8_u (local.get $i)) (i32.const 92))
          (then (local.set $i (i32.add (local.get $i) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (local.get $i))

  (func $is_digit (param $c i32) (result i32)
    (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 57))))

  (func $emit (param $cur i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $cur) (local.get $src) (local.get $len))
    (i32.add (local.get $cur) (local.get $len)))

  (func (export "handle") (param $in i32) (param $len i32) (result i64)
    (local $end i32) (local $hdrs i32) (local $status i32) (local $p i32)
    (local $hv i32) (local $hv_len i32) (local $out i32) (local $cur i32)
    (local.set $end (i32.add (local.get $in) (local.get $len)))
    (local.set $status (i32.const 272))
    (local.set $hv (i32.const -1))
    (local.set $hdrs (call $find (local.get $in) (local.get $end) (i32.const 192) (i32.const 11)))
    (if (i32.ge_s (local.get $hdrs) (i32.const 0))
      (then
        ;; requested status: three digits, first one 1-5
        (local.set $p (call $find (local.get $hdrs) (local.get $end) (i32.const 208) (i32.const 17)))
        (if (i32.ge_s (local.get $p) (i32.const 0))
          (then
            (local.set $p (i32.add (local.get $p) (i32.const 17)))
            (if (i32.and
                  (i32.and
                    (i32.and (i32.ge_u (i32.load8_u (local.get $p)) (i32.const 49))
                             (i32.le_u (i32.load8_u (local.get $p)) (i32.const 53)))
                    (call $is_digit (i32.load8_u offset=1 (local.get $p))))
                  (i32.and (call $is_digit (i32.load8_u offset=2 (local.get $p)))
                           (i32.eq (i32.load8_u offset=3 (local.get $p)) (i32.const 34))))
              (then (local.set $status (local.get $p))))))
        ;; header to copy back
        (local.set $p (call $find (local.get $hdrs) (local.get $end) (i32.const 240) (i32.const 17)))
        (if (i32.ge_s (local.get $p) (i32.const 0))
          (then
            (local.set $hv (i32.add (local.get $p) (i32.const 17)))
            (local.set $hv_len
              (i32.sub (call $string_end (local.get $hv) (local.get $end)) (local.get $hv)))))))
    (local.set $out (call $alloc (i32.add (local.get $len) (i32.add (local.get $hv_len) (i32.const 128)))))
    (if (i32.eqz (local.get $out)) (then unreachable))
    (local.set $cur (call $emit (local.get $out) (i32.const 64) (i32.const 10)))
    (local.set $cur (call $emit (local.get $cur) (local.get $status) (i32.const 3)))
    (local.set $cur (call $emit (local.get $cur) (i32.const 80) (i32.const 60)))
    (if (i32.ge_s (local.get $hv) (i32.const 0))
      (then
        (local.set $cur (call $emit (local.get $cur) (i32.const 144) (i32.const 18)))
        (local.set $cur (call $emit (local.get $cur) (local.get $hv) (local.get $hv_len)))
        (i32.store8 (local.get $cur) (i32.const 34))
        (local.set $cur (i32.add (local.get $cur) (i32.const 1)))))
    (local.set $cur (call $emit (local.get $cur) (i32.const 176) (i32.const 9)))
    (local.set $cur (call $emit (local.get $cur) (local.get $in) (local.get $len)))
    (i32.store8 (local.get $cur) (i32.const 125))
    (local.set $cur (i32.add (local.get $cur) (i32.const 1)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $cur) (local.get $out)))))
)
