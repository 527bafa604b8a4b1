#include "mp_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "device.h"
#include "mp_util.h"

void mp_print_version(void)
{
	char dev[1024];
	mp_cuda_probe(dev, sizeof dev);
	printf("%s %s\nbackends: cpu, cpu-ref%s\ncuda: %s\n", mp_progname, MP_VERSION,
	       mp_cuda_built() ? ", cuda" : "", dev);
}

void mp_exit_stdout(int status)
{
	/* A write that failed inside printf leaves only the error flag; the
	 * flush retries what is buffered and usually says why. */
	errno = 0;
	int failed = fflush(stdout) != 0 || ferror(stdout);
	int err = errno;
	/* A stdout closed by the caller (>&-) that nothing was written to
	 * is no failure: the close alone says EBADF. */
	if (fclose(stdout) != 0 && !failed && errno != EBADF) {
		failed = 1;
		err = errno;
	}
	if (failed) {
		if (err)
			mp_warnx("<stdout>: write error: %s", strerror(err));
		else
			mp_warnx("<stdout>: write error");
		exit(1);
	}
	exit(status);
}

int mp_parse_keyword(const char *opt, const char *arg, const char *const *names)
{
	for (int i = 0; names[i]; i++)
		if (!strcmp(arg, names[i]))
			return i;
	char all[256] = "";
	for (int i = 0; names[i]; i++) {
		if (i)
			strncat(all, "|", sizeof all - strlen(all) - 1);
		strncat(all, names[i], sizeof all - strlen(all) - 1);
	}
	mp_warnx("%s: \"%s\" is not one of %s", opt, arg, all);
	return -1;
}

int mp_parse_path(const char *opt, const char *arg, const char **out)
{
	if (!*arg) {
		mp_warnx("%s: the path is empty", opt);
		return -1;
	}
	*out = arg;
	return 0;
}

int mp_parse_root(const char *opt, char *arg, const char **out)
{
	/* "images/" names images: its paths are joined as images/PATH, not
	 * images//PATH in every message */
	size_t n = strlen(arg);
	while (n > 1 && arg[n - 1] == '/')
		arg[--n] = '\0';
	return mp_parse_path(opt, arg, out);
}

int mp_parse_dir_path(const char *opt, const char *arg, const char **out)
{
	if (!strcmp(arg, "-")) {
		mp_warnx("%s -: a directory is expected, not standard output "
			 "(./- names a directory called -)", opt);
		return -1;
	}
	return mp_parse_path(opt, arg, out);
}

void mp_wait_passively(char **argv)
{
	/* On cores that other programs keep busy (training beside the
	 * evaluation), a thread spinning at a barrier takes the time of the
	 * one it waits for: evaluation ran 1.5-2x faster passive there, and
	 * as fast on idle cores. */
	if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"))
		return;
	/* started by naming the dynamic loader (ld.so PROGRAM ...), which the
	 * kernel then runs without an interpreter: /proc/self/exe is the
	 * loader, which would take the first argument for the program */
	if (getauxval(AT_BASE) == 0)
		return;
	if (setenv("OMP_WAIT_POLICY", "passive", 1) < 0)
		return;
	execv("/proc/self/exe", argv);
	/* no /proc: as it is, the variable left for no one */
	unsetenv("OMP_WAIT_POLICY");
}
