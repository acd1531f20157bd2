// Preloaded (node -r) by bench/trees-ab.mjs: at exit, appends the CPU seconds
// (user + system) of this process's main thread to $STRATA_BENCH_CPU_FILE.
// The main thread is the one a tree of small files waits on; /usr/bin/time
// only sums every thread.
'use strict';
const fs = require('node:fs');
const { isMainThread } = require('node:worker_threads');

const file = process.env.STRATA_BENCH_CPU_FILE;
if (isMainThread && file) {
  process.on('exit', () => {
    try {
      // The main thread's task id is the process id; fields 14 and 15 are its user and system ticks.
      const stat = fs.readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      fs.appendFileSync(file, `${(Number(fields[11]) + Number(fields[12])) / 100}\n`);
    } catch {
      // No /proc: the figure is missing, the run is not.
    }
  });
}
