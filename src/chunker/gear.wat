;; The gear scan of the FastCDC chunker (fastcdc.ts), as WebAssembly: the
;; same loop as plain JavaScript, about three times as fast, because there
;; are no bounds checks and the gear values stay 32-bit integers.
;;
;; Memory (supplied by the caller): the 256-entry gear table at offset 0,
;; then the bytes to scan anywhere after it.
;;
;; cut(p, len, min, avg, max, maskS, maskL) is the length of the chunk that
;; starts at p, given len bytes from p (at least max, or the rest of the
;; file). Assembled into gear-wasm.ts by `npm run wasm`; a test checks that
;; the two agree.
(module
  (import "env" "memory" (memory 1))
  (func (export "cut")
    (param $p i32) (param $len i32) (param $min i32) (param $avg i32) (param $max i32)
    (param $maskS i32) (param $maskL i32) (result i32)
    (local $h i32) (local $i i32) (local $normal i32) (local $limit i32)
    (if (i32.le_u (local.get $len) (local.get $min)) (then (return (local.get $len))))
    (local.set $normal (select (local.get $avg) (local.get $len) (i32.lt_u (local.get $avg) (local.get $len))))
    (local.set $limit (select (local.get $max) (local.get $len) (i32.lt_u (local.get $max) (local.get $len))))
    (local.set $i (local.get $min))
    ;; Before the average size, the stricter mask.
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $normal)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.and (local.get $h) (local.get $maskS)))
        (return (local.get $i))))
    ;; After it, the looser one.
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $limit)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.and (local.get $h) (local.get $maskL)))
        (return (local.get $i))))
    (local.get $limit)))
