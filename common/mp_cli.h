/* Conventions every program shares: --version text, keyword options. */
#ifndef MP_CLI_H
#define MP_CLI_H

/* Prints "PROG VERSION" and the build's backends on stdout. */
void mp_print_version(void);
/* Ends a program whose output went to stdout (--help, --version): exits
 * with status once stdout is written out, or, when it could not be (a full
 * disk, a closed descriptor), prints "prog: <stdout>: write error: REASON"
 * and exits 1, as GNU tools do. A stdout that is closed (>&-) and was
 * never written to is no error. */
void mp_exit_stdout(int status) __attribute__((noreturn));
/* Makes OpenMP's waiting threads sleep at once (OMP_WAIT_POLICY=passive)
 * unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT: libgomp reads
 * them before main, so the program is started again, from
 * /proc/self/exe with the same arguments, with the variable set; where
 * that fails, or when the program was started by naming the dynamic
 * loader, it goes on as it is (under valgrind, which does not follow
 * an exec by default, set either variable). The first call of main. */
void mp_wait_passively(char **argv);
/* Looks arg up in a NULL-terminated list of names; prints
 * "prog: --opt: "x" is not one of a|b|c" and returns -1 if absent. */
int mp_parse_keyword(const char *opt, const char *arg, const char *const *names);

/* A path given to an option: an empty one, which would only fail much
 * later (after the work, at a rename), prints "prog: --opt: the path is
 * empty" and returns -1; otherwise *out = arg. */
int mp_parse_path(const char *opt, const char *arg, const char **out);
/* mp_parse_path for a directory the program writes files into: "-",
 * which names standard input or output everywhere else, is refused too,
 * rather than made a directory of that name ("./-" makes one). */
int mp_parse_dir_path(const char *opt, const char *arg, const char **out);
/* A list's root directory (-r): as mp_parse_path, its trailing slashes
 * dropped (in arg itself). */
int mp_parse_root(const char *opt, char *arg, const char **out);

#endif
