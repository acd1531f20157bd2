// V8's flags for every thread of the CLI (bin/strata.js sets them first).
//
// V8 optimizes a function once it has run a budget of bytecode. At the
// default budget a command of a second or two spent more CPU compiling
// lukewarm functions (in the main thread and in every worker) than they then
// saved: a first backup of 8,000 small files compiled 257 functions, 1.3 s
// of compile jobs on two cores. At 15 times the budget the hot ones are
// compiled (20 there), and a long run still gets all it needs.
'use strict';
module.exports = { V8_FLAGS: '--interrupt-budget=1000000' };
