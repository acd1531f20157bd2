;; The gear scan of the FastCDC chunker (fastcdc.ts), as WebAssembly: the
;; same loop as plain JavaScript, about three times as fast, because there
;; are no bounds checks and the gear values stay 32-bit integers.
;;
;; Memory (supplied by the caller): the 256-entry gear table at offset 0,
;; then the bytes to scan anywhere after it.
;;
;; cut(p, len, min, avg, max, maskS, maskL, zeros) is the length of the chunk
;; that starts at p, given len bytes from p (at least max, or the rest of the
;; file). With zeros > 0, runs of zeros are cut out (see fastcdc.ts): a chunk
;; that starts with `zeros` zero bytes ends before the first non-zero one, and
;; any other ends right after the first `zeros` zero bytes in a row.
;; Assembled into gear-wasm.ts by `npm run wasm`; a test checks that the two
;; agree.
(module
  (import "env" "memory" (memory 1))
  (func (export "cut")
    (param $p i32) (param $len i32) (param $min i32) (param $avg i32) (param $max i32)
    (param $maskS i32) (param $maskL i32) (param $zeros i32) (result i32)
    (local $h i32) (local $i i32) (local $normal i32) (local $limit i32)
    (local $b i32) (local $run i32) (local $w i64) (local $mask i32) (local $end i32) (local $c0 i32) (local $second i32) (local $stop i32)
    (local.set $limit (select (local.get $max) (local.get $len) (i32.lt_u (local.get $max) (local.get $len))))
    (if (i32.eqz (local.get $zeros))
      (then
        (if (i32.le_u (local.get $len) (local.get $min)) (then (return (local.get $len))))
        (local.set $normal (select (local.get $avg) (local.get $len) (i32.lt_u (local.get $avg) (local.get $len))))
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
        (return (local.get $limit))))

    ;; Runs of zeros cut out. Leading zeros, eight bytes at a time, then one at a time.
    (block $lead
      (loop $next
        (br_if $lead (i32.gt_u (i32.add (local.get $i) (i32.const 8)) (local.get $limit)))
        (br_if $lead (i64.ne (i64.load (i32.add (local.get $p) (local.get $i))) (i64.const 0)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next)))
    (block $lead
      (loop $next
        (br_if $lead (i32.ge_u (local.get $i) (local.get $limit)))
        (br_if $lead (i32.load8_u (i32.add (local.get $p) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; `zeros` of them make a chunk of zeros, up to the first other byte.
    (if (i32.ge_u (local.get $i) (local.get $zeros)) (then (return (local.get $i))))
    (if (i32.ge_u (local.get $i) (local.get $limit)) (then (return (local.get $limit))))
    ;; Up to min, only a run of zeros ends the chunk (right after its first `zeros` bytes). Eight bytes
    ;; at a time: the zero bytes a word starts with may complete a run, those it ends with start the next.
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (local.set $normal (select (local.get $min) (local.get $limit) (i32.lt_u (local.get $min) (local.get $limit))))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (i32.add (local.get $i) (i32.const 8)) (local.get $normal)))
        (local.set $w (i64.load (i32.add (local.get $p) (local.get $i))))
        (if (i32.ge_u (i32.add (local.get $run) (i32.wrap_i64 (i64.shr_u (i64.ctz (local.get $w)) (i64.const 3)))) (local.get $zeros))
          (then (return (i32.add (local.get $i) (i32.sub (local.get $zeros) (local.get $run))))))
        (local.set $run
          (select (i32.add (local.get $run) (i32.const 8)) (i32.wrap_i64 (i64.shr_u (i64.clz (local.get $w)) (i64.const 3))) (i64.eqz (local.get $w))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $normal)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (local.set $run (select (i32.const 0) (i32.add (local.get $run) (i32.const 1)) (i32.load8_u (i32.add (local.get $p) (i32.sub (local.get $i) (i32.const 1))))))
        (if (i32.eq (local.get $run) (local.get $zeros)) (then (return (local.get $i))))
        (br $next)))
    (if (i32.le_u (local.get $len) (local.get $min)) (then (return (local.get $limit))))

    ;; From min, the gear hash as above, and the zeros counted. Counting every byte would cost a
    ;; third of the speed; instead, 32 zeros in a row leave the hash at c0 whatever came before (each
    ;; byte shifts the hash by one bit), so the hash is compared with c0 every 16 bytes (a run of
    ;; `zeros`, at least 64, is met by then), and from there the run is counted byte by byte.
    (local.set $c0 (i32.sub (i32.const 0) (i32.load (i32.const 0))))
    (local.set $mask (local.get $maskS))
    (local.set $end (select (local.get $avg) (local.get $len) (i32.lt_u (local.get $avg) (local.get $len))))
    (loop $phase
      (block $phaseEnd
        (loop $step
          ;; In a run of zeros: byte by byte.
          (block $fast
            (loop $slow
              (br_if $fast (i32.eqz (local.get $run)))
              (br_if $phaseEnd (i32.ge_u (local.get $i) (local.get $end)))
              (local.set $b (i32.load8_u (i32.add (local.get $p) (local.get $i))))
              (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1)) (i32.load (i32.shl (local.get $b) (i32.const 2)))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (local.set $run (select (i32.const 0) (i32.add (local.get $run) (i32.const 1)) (local.get $b)))
              (if (i32.eqz (i32.and (local.get $h) (local.get $mask))) (then (return (local.get $i))))
              (if (i32.eq (local.get $run) (local.get $zeros)) (then (return (local.get $i))))
              (br $slow)))
          ;; Elsewhere: until a cut, or the hash is c0 after one of the 16-byte stretches.
          (block $zeroish
            (loop $stretch
              (br_if $phaseEnd (i32.ge_u (local.get $i) (local.get $end)))
              (local.set $stop (select (i32.add (local.get $i) (i32.const 16)) (local.get $end)
                (i32.lt_u (i32.add (local.get $i) (i32.const 16)) (local.get $end))))
              (block $done
                (loop $next
                  (br_if $done (i32.ge_u (local.get $i) (local.get $stop)))
                  (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
                    (i32.load (i32.shl (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 2)))))
                  (local.set $i (i32.add (local.get $i) (i32.const 1)))
                  (br_if $next (i32.and (local.get $h) (local.get $mask)))
                  (return (local.get $i))))
              (br_if $zeroish (i32.eq (local.get $h) (local.get $c0)))
              (br $stretch)))
          ;; The zeros just before i (32 to 47 of them, unless other bytes happened to hash to c0).
          (local.set $b (local.get $i))
          (block $counted
            (loop $back
              (br_if $counted (i32.load8_u (i32.add (local.get $p) (i32.sub (local.get $b) (i32.const 1)))))
              (local.set $b (i32.sub (local.get $b) (i32.const 1)))
              (br $back)))
          (local.set $run (i32.sub (local.get $i) (local.get $b)))
          (br $step)))
      ;; The average size reached: the looser mask, up to the limit.
      (if (i32.eqz (local.get $second))
        (then
          (local.set $second (i32.const 1))
          (local.set $mask (local.get $maskL))
          (local.set $end (local.get $limit))
          (br $phase))))
    (local.get $limit)))
