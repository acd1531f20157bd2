// V8's flags for every thread of the CLI (bin/strata.js sets them).
//
// V8 optimizes a function once it has run a budget of bytecode. At the
// default budget a command of a second or two spent more CPU compiling
// lukewarm functions (in the main thread and in every worker) than they then
// saved: a first backup of 8,000 small files compiled 257 functions, 1.3 s
// of compile jobs on two cores. At 15 times the budget only the hot ones are
// (20 there). A long run, though, wants its per-block functions optimized
// early (a backup of 1 GiB was 6% slower with the high budget throughout):
// after its first second a command goes back to the default.
'use strict';
module.exports = {
  /** Set before anything is compiled (and so the flags the code cache is made under). */
  V8_FLAGS: '--interrupt-budget=1000000',
  /** Set once the command has run this long. */
  LATER_MS: 1000,
  /** V8's own default (Node 20). */
  LATER_FLAGS: '--interrupt-budget=67584',
};
