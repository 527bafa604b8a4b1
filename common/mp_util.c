#include "mp_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

const char *mp_progname = "mp";

/* Copies the len bytes of src, too long for dst[cap], without their
 * middle: the start, "...", and the end, cut between UTF-8 characters. */
static void cut_middle(char *dst, size_t cap, const char *src, size_t len)
{
	static const char dots[] = "...";
	size_t keep = cap - sizeof dots; /* cap - 1 with the dots and the NUL */
	size_t head = keep / 4, tail = len - (keep - head);
	while (head > 0 && ((unsigned char)src[head] & 0xc0) == 0x80)
		head--;
	while (tail < len && ((unsigned char)src[tail] & 0xc0) == 0x80)
		tail++;
	memcpy(dst, src, head);
	memcpy(dst + head, dots, sizeof dots - 1);
	memcpy(dst + head + sizeof dots - 1, src + tail, len - tail + 1);
}

/* A message that does not fit (a path of thousands of bytes) loses its
 * middle rather than its end: what follows a path, the list, the line and
 * the reason, is what the reader needs. e->msg is written last, so an
 * argument may point into it. */
int mp_seterr(mp_error *e, const char *fmt, ...)
{
	if (!e)
		return -1;
	char buf[sizeof e->msg];
	va_list ap, again;
	va_start(ap, fmt);
	va_copy(again, ap);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		snprintf(buf, sizeof buf, "(an error message that cannot be formatted)");
	if (n >= (int)sizeof buf) {
		char *full = malloc((size_t)n + 1);
		if (full && vsnprintf(full, (size_t)n + 1, fmt, again) == n) {
			cut_middle(e->msg, sizeof e->msg, full, (size_t)n);
			free(full);
			va_end(again);
			return -1;
		}
		free(full); /* out of memory: the start, as it was cut */
	}
	va_end(again);
	memcpy(e->msg, buf, sizeof buf);
	return -1;
}

void mp_set_progname(const char *argv0)
{
	const char *slash = strrchr(argv0, '/');
	mp_progname = slash ? slash + 1 : argv0;
}

void mp_guard_std_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		const int got = open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);
		if (got >= 0 && got != fd) {
			dup2(got, fd);
			close(got);
		}
	}
}

void mp_writes_fail_past_size_limit(void)
{
	signal(SIGXFSZ, SIG_IGN);
}

void mp_warnx(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", mp_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void mp_errx(int status, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", mp_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

void *mp_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		mp_errx(1, "out of memory (%zu bytes)", n);
	return p;
}

void *mp_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		mp_errx(1, "out of memory (%zu x %zu bytes)", n, size);
	return p;
}

void *mp_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		mp_errx(1, "out of memory (%zu bytes)", n);
	return q;
}

char *mp_xstrdup(const char *s)
{
	char *d = strdup(s);
	if (!d)
		mp_errx(1, "out of memory");
	return d;
}

int mp_number_start(const char *p)
{
	if (*p == '-' || *p == '+')
		p++;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		return 0; /* strtod's hexadecimal */
	return (*p >= '0' && *p <= '9') || (*p == '.' && p[1] >= '0' && p[1] <= '9');
}

int mp_parse_decimal(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	if (n == 0 || (s[0] == '0' && n > 1))
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (d > max || v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int mp_parse_long(const char *opt, const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (!mp_number_start(s) || errno || end == s || *end != '\0' || v < min || v > max) {
		mp_warnx("%s: \"%s\" is not a number from %ld to %ld", opt, s, min,
			 max);
		return -1;
	}
	*out = v;
	return 0;
}

int mp_parse_double(const char *opt, const char *s, double min, double max,
		    double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (!mp_number_start(s) || errno || end == s || *end != '\0' || !isfinite(v) ||
	    v < min || v > max) {
		mp_warnx("%s: \"%s\" is not a number from %g to %g", opt, s, min,
			 max);
		return -1;
	}
	*out = v;
	return 0;
}

/* The lists of both: entries in [min, max] read by strtod, or with whole
 * by strtol in decimal, into dout or lout. */
static int parse_list(const char *opt, const char *s, int whole, double min, double max,
		      double *dout, long *lout, int min_count, int max_count)
{
	int n = 0;
	const char *p = s;
	for (;;) {
		char *end;
		errno = 0;
		const double v = whole ? (double)strtol(p, &end, 10) : strtod(p, &end);
		if (!mp_number_start(p) || errno || end == p || (*end && *end != ',') ||
		    !isfinite(v) || v < min || v > max || n == max_count) {
			char lo[32], hi[32];
			snprintf(lo, sizeof lo, whole ? "%.0f" : "%g", min);
			snprintf(hi, sizeof hi, whole ? "%.0f" : "%g", max);
			mp_warnx("%s: \"%s\": entry %d is not a %s from %s to %s%s", opt, s, n + 1,
				 whole ? "whole number" : "number", lo, hi,
				 n == max_count ? " (too many entries)" : "");
			return -1;
		}
		if (whole)
			lout[n++] = (long)v;
		else
			dout[n++] = v;
		if (!*end)
			break;
		p = end + 1;
	}
	if (n < min_count) {
		mp_warnx("%s: \"%s\" has %d entr%s, expected %d%s", opt, s, n, n == 1 ? "y" : "ies",
			 min_count, min_count == max_count ? "" : " or more");
		return -1;
	}
	return n;
}

int mp_parse_double_list(const char *opt, const char *s, double min, double max,
			 double *out, int min_count, int max_count)
{
	return parse_list(opt, s, 0, min, max, out, NULL, min_count, max_count);
}

int mp_parse_long_list(const char *opt, const char *s, long min, long max, long *out,
		       int min_count, int max_count)
{
	return parse_list(opt, s, 1, (double)min, (double)max, NULL, out, min_count, max_count);
}

uint32_t mp_crc32(uint32_t crc, const void *buf, size_t len)
{
	const Bytef *p = buf;
	uLong c = crc;
	/* zlib takes a uInt length: feed large buffers in pieces. */
	while (len > 0) {
		uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
		c = crc32(c, p, n);
		p += n;
		len -= n;
	}
	return (uint32_t)c;
}

/* After a call on path failed with ENOENT: whether to call again, as
 * path is a symbolic link that names another file than when *seen (its
 * target then, kept in seen) was read. A link replaced while the call
 * followed it (a training run's last.safetensors, moved on to a newer
 * checkpoint and the one it named removed) names a file that is there;
 * a link that names the same missing file twice dangles. Bounded, for a
 * link that changes without end. */
static int link_moved(const char *path, char *seen, size_t size, int *tries)
{
	char now[PATH_MAX];
	if (errno != ENOENT || ++*tries > 100)
		return 0;
	ssize_t n = readlink(path, now, sizeof now - 1);
	if (n < 0 || (size_t)n >= size) {
		errno = ENOENT;
		return 0;
	}
	now[n] = '\0';
	const int moved = *tries == 1 || strcmp(now, seen);
	memcpy(seen, now, (size_t)n + 1);
	errno = ENOENT;
	return moved;
}

int mp_open_follow(const char *path, int flags)
{
	char seen[PATH_MAX];
	int tries = 0, fd;
	while ((fd = open(path, flags)) < 0 && link_moved(path, seen, sizeof seen, &tries))
		;
	return fd;
}

int mp_stat_follow(const char *path, struct stat *st)
{
	char seen[PATH_MAX];
	int tries = 0, rc;
	while ((rc = stat(path, st)) < 0 && link_moved(path, seen, sizeof seen, &tries))
		;
	return rc;
}

const char *mp_open_error(const char *path, int err, char *buf, size_t size)
{
	/* a link whose file is gone (images moved, a dataset copied without
	 * what its links name): say so, and what it names */
	char target[512];
	struct stat lst;
	ssize_t n;
	if (err == ENOENT && lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode) &&
	    (n = readlink(path, target, sizeof target - 1)) > 0) {
		target[n] = '\0';
		snprintf(buf, size, "a symbolic link to %s, which does not exist", target);
		return buf;
	}
	return strerror(err);
}

/* What a file that is neither regular nor a directory is, for a message. */
static const char *special_file_kind(mode_t mode)
{
	return S_ISFIFO(mode) ? "a FIFO" : S_ISCHR(mode) ? "a character device"
	       : S_ISBLK(mode) ? "a block device" : S_ISSOCK(mode) ? "a socket"
	       : "of an unknown type";
}

int mp_read_file(const char *path, size_t max_bytes, uint8_t **buf, size_t *len,
		 mp_error *e)
{
	/* Not even opened, where its type shows first: opening a FIFO wakes
	 * a writer waiting on it, which our close then ends with SIGPIPE,
	 * and opening a device may act on it. */
	struct stat pre;
	if (stat(path, &pre) == 0 && !S_ISREG(pre.st_mode) && !S_ISDIR(pre.st_mode)) {
		errno = 0;
		return mp_seterr(e, "not a regular file (%s)", special_file_kind(pre.st_mode));
	}
	/* O_NONBLOCK: a FIFO put in its place since blocks no open until a
	 * writer comes, which may be never, and no signal would end the wait
	 * in a worker thread. */
	int fd = mp_open_follow(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int err = errno;
		char why[600];
		mp_seterr(e, "%s", mp_open_error(path, err, why, sizeof why));
		errno = err;
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int err = errno;
		close(fd);
		mp_seterr(e, "%s", strerror(err));
		errno = err;
		return -1;
	}
	errno = 0;
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return mp_seterr(e, "is a directory");
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return mp_seterr(e, "not a regular file (%s)", special_file_kind(st.st_mode));
	}
	if ((uint64_t)st.st_size > max_bytes) {
		close(fd);
		return mp_seterr(e, "file of %lld bytes is larger than the limit of %zu",
				 (long long)st.st_size, max_bytes);
	}
	size_t want = (size_t)st.st_size;
	uint8_t *b = malloc(want ? want : 1);
	if (!b) {
		close(fd);
		mp_seterr(e, "out of memory reading %zu bytes", want);
		errno = ENOMEM;
		return -1;
	}
	size_t got = 0;
	while (got < want) {
		ssize_t n = read(fd, b + got, want - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int err = errno;
			free(b);
			close(fd);
			mp_seterr(e, "read error: %s", strerror(err));
			errno = err;
			return -1;
		}
		if (n == 0)
			break; /* file shrank while we read it */
		got += (size_t)n;
	}
	close(fd);
	*buf = b;
	*len = got;
	return 0;
}

const char *mp_getenv(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

int mp_pid_gone(const char *digits)
{
	char *end;
	errno = 0;
	long pid = strtol(digits, &end, 10);
	if (end == digits || *end || pid <= 0 || errno)
		return 0;
	if (kill((pid_t)pid, 0) < 0)
		return errno == ESRCH;
	/* a process killed but not yet reaped (a zombie) writes nothing more;
	 * where no init reaps orphans (a container's), it stays one for good */
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* "PID (COMM) STATE ...", where COMM may hold parentheses */
	const char *paren = strrchr(buf, ')');
	return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

int mp_parent_dir(const char *path, char *dir, size_t n)
{
	const char *slash = strrchr(path, '/');
	const size_t len = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
	if (len >= n)
		return -1;
	if (!slash)
		memcpy(dir, ".", 2);
	else
		snprintf(dir, n, "%.*s", (int)len, path);
	return 0;
}

void mp_each_stale(const char *path, const char *tag,
		   int (*fn)(const char *entry, void *arg), void *arg)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	if (mp_parent_dir(path, dir, sizeof dir) < 0)
		return;
	const size_t blen = strlen(base), tlen = strlen(tag);
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		char p[PATH_MAX];
		if (strncmp(n, base, blen) || strncmp(n + blen, tag, tlen) ||
		    !mp_pid_gone(n + blen + tlen) ||
		    snprintf(p, sizeof p, "%.*s%s", slash ? (int)(slash - path) + 1 : 0, path, n) >=
			    (int)sizeof p)
			continue; /* another file, or its writer may still run */
		if (fn(p, arg))
			break;
	}
	closedir(d);
}

static int remove_stale_file(const char *entry, void *arg)
{
	(void)arg;
	struct stat st;
	if (lstat(entry, &st) == 0 && S_ISREG(st.st_mode) && unlink(entry) == 0)
		mp_warnx("removed %s, left by an interrupted run", entry);
	return 0;
}

void mp_remove_stale_files(const char *path, const char *tag)
{
	mp_each_stale(path, tag, remove_stale_file, NULL);
}

void mp_sync_parent_dir(const char *path)
{
	char dir[PATH_MAX];
	if (mp_parent_dir(path, dir, sizeof dir) < 0)
		return;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	(void)fsync(fd); // some file systems refuse it on a directory: nothing to do then
	close(fd);
}

/* Fixed slots rather than a list: the handler may run on any thread while
 * another adds or removes, and must not follow pointers being freed. The
 * lock orders threads that add and remove; the handler never takes it.
 * Atomics, not volatile: the handler that reads them may run on another
 * thread than the one that writes them (lock-free, so safe in a handler). */
static char tmp_paths[MP_TMP_MAX][PATH_MAX];
static atomic_int tmp_used[MP_TMP_MAX];
static pthread_mutex_t tmp_lock = PTHREAD_MUTEX_INITIALIZER;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal handler needs lock-free atomics");

/* Set while a set of outputs is renamed into place: a signal then waits
 * for the last rename, so that it never leaves some files of the run and
 * some of an earlier one. The handler stores tmp_pending, then reads
 * tmp_held; mp_tmp_hold and mp_tmp_release store tmp_held, then read
 * tmp_pending: in sequential consistency one of the two sees the other's
 * store, so a signal on another thread is neither lost at the release nor
 * left to end the program half way through the renames. */
static atomic_int tmp_held, tmp_pending;

/* Removes the registered files and ends the program by sig. */
static void tmp_die(int sig)
{
	for (int i = 0; i < MP_TMP_MAX; i++)
		if (atomic_load_explicit(&tmp_used[i], memory_order_acquire))
			unlink(tmp_paths[i]);
	signal(sig, SIG_DFL);
	raise(sig); /* delivered, and fatal, once the handler returns */
}

static void tmp_on_signal(int sig)
{
	atomic_store(&tmp_pending, sig);
	if (atomic_load(&tmp_held))
		return; /* mp_tmp_release acts on it */
	tmp_die(sig);
}

void mp_catch_stop_signals(void (*handler)(int), int pipe, int block_all, int restart)
{
	static const int sigs[] = {SIGHUP, SIGINT, SIGTERM, SIGPIPE};
	struct sigaction sa, was;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = restart ? SA_RESTART : 0;
	if (block_all)
		sigfillset(&sa.sa_mask);
	else
		sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0] - !pipe; i++)
		if (sigaction(sigs[i], NULL, &was) == 0 && was.sa_handler != SIG_IGN)
			sigaction(sigs[i], &sa, NULL);
}

void mp_tmp_on_signals(void)
{
	mp_catch_stop_signals(tmp_on_signal, 1, 1, 0);
}

void mp_tmp_hold(void)
{
	atomic_store(&tmp_held, 1);
	/* a handler on another thread that came before the hold is ending
	 * the program now: no rename starts */
	int sig = atomic_load(&tmp_pending);
	if (sig)
		tmp_die(sig);
}

void mp_tmp_release(void)
{
	atomic_store(&tmp_held, 0);
	int sig = atomic_load(&tmp_pending);
	if (sig)
		tmp_die(sig);
}

int mp_tmp_add(const char *path)
{
	size_t n = strlen(path);
	if (n >= PATH_MAX)
		return -1;
	int rc = -1;
	pthread_mutex_lock(&tmp_lock);
	for (int i = 0; i < MP_TMP_MAX; i++)
		if (!atomic_load_explicit(&tmp_used[i], memory_order_relaxed)) {
			memcpy(tmp_paths[i], path, n + 1);
			/* the name is whole before the handler can see it */
			atomic_store_explicit(&tmp_used[i], 1, memory_order_release);
			rc = 0;
			break;
		}
	pthread_mutex_unlock(&tmp_lock);
	return rc;
}

void mp_tmp_remove(const char *path)
{
	pthread_mutex_lock(&tmp_lock);
	for (int i = 0; i < MP_TMP_MAX; i++)
		if (atomic_load_explicit(&tmp_used[i], memory_order_relaxed) &&
		    !strcmp(tmp_paths[i], path)) {
			atomic_store_explicit(&tmp_used[i], 0, memory_order_relaxed);
			break;
		}
	pthread_mutex_unlock(&tmp_lock);
}

int mp_write_file_atomic(const char *path, const void *buf, size_t len,
			 mp_error *e)
{
	size_t plen = strlen(path);
	char *tmp = malloc(plen + 32);
	if (!tmp)
		return mp_seterr(e, "%s: out of memory", path);
	snprintf(tmp, plen + 32, "%s.tmp-%ld", path, (long)getpid());
	/* before it exists, so that a signal (mp_tmp_on_signals) never
	 * leaves it behind */
	int listed = mp_tmp_add(tmp) == 0;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		mp_seterr(e, "%s: %s", path, strerror(errno));
		if (listed)
			mp_tmp_remove(tmp);
		free(tmp);
		return -1;
	}
	const uint8_t *p = buf;
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, p + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			mp_seterr(e, "%s: write error: %s", path, strerror(errno));
			goto fail;
		}
		done += (size_t)n;
	}
	if (fsync(fd) < 0) {
		mp_seterr(e, "%s: fsync: %s", path, strerror(errno));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		mp_seterr(e, "%s: close: %s", path, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		mp_seterr(e, "%s: rename: %s", path, strerror(errno));
		goto fail;
	}
	if (listed)
		mp_tmp_remove(tmp);
	mp_sync_parent_dir(path);
	free(tmp);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	if (listed)
		mp_tmp_remove(tmp);
	free(tmp);
	return -1;
}

/* Writes all of buf to fd, path naming it in messages. */
static int write_all(int fd, const char *path, const void *buf, size_t len, mp_error *e)
{
	const uint8_t *p = buf;
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, p + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return mp_seterr(e, "%s: write error: %s", path, strerror(errno));
		done += (size_t)n;
	}
	return 0;
}

int mp_write_output(const char *path, const void *buf, size_t len, mp_error *e)
{
	struct stat st;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return mp_seterr(e, "%s: %s", path, strerror(EISDIR));
	/* the file standard output or error is redirected to, by another name
	 * (/dev/stdout, /dev/stderr): replaced, it would lose what the program
	 * writes there before and after */
	for (int fd = STDOUT_FILENO; fd <= STDERR_FILENO; fd++)
		if (mp_names_fd(path, fd)) {
			fflush(fd == STDOUT_FILENO ? stdout : stderr);
			return write_all(fd, path, buf, len, e);
		}
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* a device or FIFO has no directory entry of ours to replace */
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return mp_seterr(e, "%s: %s", path, strerror(errno));
		if (write_all(fd, path, buf, len, e) < 0) {
			close(fd);
			return -1;
		}
		if (close(fd) < 0)
			return mp_seterr(e, "%s: close: %s", path, strerror(errno));
		return 0;
	}
	char target[PATH_MAX];
	if (mp_follow_links(path, target, sizeof target, e) < 0)
		return -1;
	return mp_write_file_atomic(target, buf, len, e);
}

int mp_canonical_path(const char *path, char *out, size_t n)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX], real[PATH_MAX];
	if (!slash) {
		strcpy(dir, ".");
	} else if (slash == path) {
		strcpy(dir, "/");
	} else {
		size_t len = (size_t)(slash - path);
		if (len >= sizeof dir)
			return -1;
		memcpy(dir, path, len);
		dir[len] = '\0';
	}
	if (!realpath(dir, real))
		return -1;
	int w = snprintf(out, n, "%s/%s", real, slash ? slash + 1 : path);
	return w < 0 || (size_t)w >= n ? -1 : 0;
}

int mp_same_file(const char *a, const char *b)
{
	struct stat sa, sb;
	int ha = stat(a, &sa) == 0, hb = stat(b, &sb) == 0;
	if (ha || hb)
		return ha && hb && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
	char ca[PATH_MAX + NAME_MAX + 2], cb[PATH_MAX + NAME_MAX + 2];
	if (mp_canonical_path(a, ca, sizeof ca) < 0 || mp_canonical_path(b, cb, sizeof cb) < 0)
		return !strcmp(a, b);
	return !strcmp(ca, cb);
}

int mp_names_fd(const char *path, int fd)
{
	struct stat a, b;
	return stat(path, &a) == 0 && !S_ISCHR(a.st_mode) && fstat(fd, &b) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int mp_names_stdout(const char *path)
{
	return !strcmp(path, "-") || mp_names_fd(path, STDOUT_FILENO);
}

int mp_follow_links(const char *path, char *out, size_t size, mp_error *e)
{
	if (strlen(path) >= size)
		return mp_seterr(e, "%s: path too long", path);
	strcpy(out, path);
	for (int hops = 0;; hops++) {
		struct stat st;
		if (lstat(out, &st) < 0 || !S_ISLNK(st.st_mode))
			return 0;
		if (hops == 40)
			return mp_seterr(e, "%s: %s", path, strerror(ELOOP));
		char to[PATH_MAX];
		ssize_t n = readlink(out, to, sizeof to - 1);
		if (n < 0)
			return mp_seterr(e, "%s: %s", path, strerror(errno));
		to[n] = '\0';
		/* a relative target is read from the link's directory */
		const char *slash = strrchr(out, '/');
		size_t dir = to[0] == '/' || !slash ? 0 : (size_t)(slash - out) + 1;
		if (dir + (size_t)n >= size)
			return mp_seterr(e, "%s: path too long", path);
		memcpy(out + dir, to, (size_t)n + 1);
	}
}

size_t mp_utf8_bad_at(const void *buf, size_t len)
{
	const uint8_t *s = buf;
	size_t i = 0;
	while (i < len) {
		uint8_t c = s[i];
		size_t n;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return i;
		}
		if (len - i <= n)
			return i;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += n + 1;
	}
	return len;
}

char *mp_json_utf8(const char *json)
{
	size_t len = strlen(json), bad = 0;
	for (size_t i = 0, k; i < len; i += k ? k : 1) {
		k = mp_utf8_bad_at(json + i, len - i);
		bad += !k;
	}
	char *out = malloc(len + 5 * bad + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0, k; i < len;) {
		k = mp_utf8_bad_at(json + i, len - i);
		if (k) {
			memcpy(o, json + i, k);
			o += k;
			i += k;
		} else {
			/* 6 characters for the byte's 1 */
			o += sprintf(o, "\\udc%02x", (unsigned char)json[i++]);
		}
	}
	*o = 0;
	return out;
}

int mp_put_tsv_field(FILE *f, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc;
		switch (s[i]) {
		case '\t': rc = fputs("\\t", f); break;
		case '\n': rc = fputs("\\n", f); break;
		case '\r': rc = fputs("\\r", f); break;
		case '\\': rc = fputs("\\\\", f); break;
		default: rc = putc(s[i], f);
		}
		if (rc == EOF)
			return EOF;
	}
	return 0;
}

int mp_remove_tree(const char *path)
{
	/* O_NOFOLLOW: a link under the name is not followed */
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		struct stat st;
		if (errno == ENOENT)
			return 0;
		if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			errno = ELOOP; /* O_DIRECTORY says ENOTDIR for a link */
		return -1;
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	/* every entry checked before any is removed: a directory holding
	 * something we would not have put there stays whole */
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode)) {
			closedir(d);
			errno = ENOTEMPTY;
			return -1;
		}
	}
	rewinddir(d);
	int rc = 0, err = 0;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(fd, de->d_name, 0) < 0 && errno != ENOENT) {
			rc = -1;
			err = errno;
		}
	}
	closedir(d);
	if (rmdir(path) < 0) {
		if (!rc)
			err = errno;
		rc = -1;
	}
	if (rc)
		errno = err;
	return rc;
}

double mp_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double mp_giga_or_mega(double v, const char **prefix)
{
	*prefix = v >= 1e9 ? "G" : "M";
	return v >= 1e9 ? v / 1e9 : v / 1e6;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void mp_rng_seed(mp_rng *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t mp_rng_next(mp_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

uint64_t mp_rng_below(mp_rng *r, uint64_t n)
{
	if (n <= 1)
		return 0;
	/* Rejection sampling keeps the draw unbiased. */
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t v;
	do
		v = mp_rng_next(r);
	while (v >= limit);
	return v % n;
}

double mp_rng_uniform(mp_rng *r)
{
	return (double)(mp_rng_next(r) >> 11) * 0x1.0p-53;
}

void mp_progress_init(mp_progress *p, const char *what, uint64_t total, int quiet)
{
	p->enabled = !quiet && isatty(STDERR_FILENO);
	p->total = total;
	p->base = 0;
	p->start = mp_now();
	p->last_draw = 0;
	p->what = what;
}

void mp_progress_start_at(mp_progress *p, uint64_t done)
{
	p->base = done;
}

static void fmt_duration(char *buf, size_t n, double s)
{
	if (s < 0 || !isfinite(s))
		snprintf(buf, n, "--:--");
	else if (s >= 3600)
		snprintf(buf, n, "%d:%02d:%02d", (int)(s / 3600),
			 (int)fmod(s / 60, 60), (int)fmod(s, 60));
	else
		snprintf(buf, n, "%02d:%02d", (int)(s / 60), (int)fmod(s, 60));
}

void mp_progress_update(mp_progress *p, uint64_t done, const char *extra)
{
	if (p->enabled)
		mp_progress_update_at(p, done, extra, mp_now());
}

void mp_progress_update_at(mp_progress *p, uint64_t done, const char *extra, double now)
{
	if (!p->enabled)
		return;
	/* a count of unknown total (a stream) is never at its end: it waits
	 * its turn too, or every batch would redraw the line */
	if (now - p->last_draw < 0.1 && (!p->total || done < p->total))
		return;
	p->last_draw = now;
	double el = now - p->start;
	double rate = el > 0 && done > p->base ? (double)(done - p->base) / el : 0;
	char eta[32], elapsed[32];
	fmt_duration(elapsed, sizeof elapsed, el);
	if (!p->total) { /* no bar, no "/0" and no time left */
		fprintf(stderr, "\r%s %llu %.0f/s %s%s%s\033[K", p->what, (unsigned long long)done,
			rate, elapsed, extra ? " " : "", extra ? extra : "");
		fflush(stderr);
		return;
	}
	if (rate > 0)
		fmt_duration(eta, sizeof eta, (double)(p->total - done) / rate);
	else
		snprintf(eta, sizeof eta, "--:--");
	int width = 30;
	int filled = (int)((double)done / (double)p->total * width);
	if (filled > width)
		filled = width;
	char bar[64];
	for (int i = 0; i < width; i++)
		bar[i] = i < filled ? '#' : '.';
	bar[width] = '\0';
	fprintf(stderr, "\r%s [%s] %llu/%llu %.0f/s %s ETA %s%s%s\033[K", p->what,
		bar, (unsigned long long)done, (unsigned long long)p->total, rate,
		elapsed, eta, extra ? " " : "", extra ? extra : "");
	fflush(stderr);
}

void mp_progress_done(mp_progress *p)
{
	if (p->enabled) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
}

int mp_cpu_count(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	const long online = sysconf(_SC_NPROCESSORS_ONLN);
	return online > 0 ? (online > INT_MAX ? INT_MAX : (int)online) : 1;
}
