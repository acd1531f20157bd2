/** strata's release, as `--version` and the server's health route report it (package.json says the same). */
export const VERSION = '0.1.0';
