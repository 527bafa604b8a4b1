/* Shared helpers: error messages that do not fit their buffer, temporary
 * files that a signal removes, reading a whole file, the part of a
 * backend's description that decides its results. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_backends.h"
#include "mp_json.h"
#include "mp_util.h"

#define CAP sizeof(((mp_error *)0)->msg)

/* A string of n copies of c. */
static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static int ends_with(const char *s, const char *end)
{
	size_t n = strlen(s), m = strlen(end);
	return n >= m && !strcmp(s + n - m, end);
}

static void short_messages_are_kept_whole(void **state)
{
	(void)state;
	mp_error e;
	assert_int_equal(mp_seterr(&e, "%s (%s line %d): %s", "a.png", "list.txt", 3, "empty file"),
			 -1);
	assert_string_equal(e.msg, "a.png (list.txt line 3): empty file");
	/* one byte short of the buffer: still whole */
	char *x = repeat('x', CAP - 1);
	mp_seterr(&e, "%s", x);
	assert_string_equal(e.msg, x);
	free(x);
	assert_int_equal(mp_seterr(NULL, "nothing"), -1);
}

static void a_long_path_loses_its_middle_not_the_reason(void **state)
{
	(void)state;
	mp_error e;
	char *x = repeat('x', 5000);
	mp_seterr(&e, "img/%s.png (%s line %ld): %s", x, "long.txt", 1L, "path too long");
	assert_true(strlen(e.msg) <= CAP - 1);
	assert_true(strlen(e.msg) >= CAP - 4);
	assert_true(!strncmp(e.msg, "img/xxxx", 8));
	assert_true(ends_with(e.msg, "xxxx.png (long.txt line 1): path too long"));
	assert_non_null(strstr(e.msg, "x...x"));
	free(x);

	/* exactly the buffer's size: one byte too long */
	x = repeat('y', CAP);
	mp_seterr(&e, "%s!", x);
	assert_true(strlen(e.msg) < CAP);
	assert_true(ends_with(e.msg, "yyy!"));
	assert_non_null(strstr(e.msg, "y...y"));
	free(x);
}

static void an_argument_may_be_the_message_itself(void **state)
{
	(void)state;
	mp_error e;
	char *x = repeat('z', 3000);
	mp_seterr(&e, "inner: %s", x);
	mp_seterr(&e, "outer: %s", e.msg);
	assert_true(!strncmp(e.msg, "outer: inner: zzz", 17));
	assert_true(ends_with(e.msg, "zzz"));
	free(x);
	mp_seterr(&e, "reason");
	mp_seterr(&e, "%s: %s", "file", e.msg);
	assert_string_equal(e.msg, "file: reason");
}

/* The cut never splits a UTF-8 character: every byte sequence left is
 * whole. */
static void the_cut_falls_between_utf8_characters(void **state)
{
	(void)state;
	mp_error e;
	/* "é" is 2 bytes, "€" 3: try every alignment of the cut */
	const char *chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
	for (int c = 0; c < 3; c++)
		for (int shift = 0; shift < 4; shift++) {
			size_t clen = strlen(chars[c]);
			char *s = malloc(shift + 1000 * clen + 1);
			assert_non_null(s);
			memset(s, 'a', (size_t)shift);
			for (int i = 0; i < 1000; i++)
				memcpy(s + shift + i * clen, chars[c], clen);
			s[shift + 1000 * clen] = '\0';
			mp_seterr(&e, "%s: reason", s);
			assert_true(ends_with(e.msg, ": reason"));
			char *dots = strstr(e.msg, "...");
			assert_non_null(dots);
			/* no continuation byte right after the dots, and the
			 * character before them is whole */
			assert_true(((unsigned char)dots[3] & 0xc0) != 0x80);
			size_t before = (size_t)(dots - e.msg);
			assert_true(before >= (size_t)shift);
			assert_int_equal((before - (size_t)shift) % clen, 0);
			free(s);
		}
}

/* A signal that ends mp_write_file_atomic half way removes its temporary
 * file. The temporary name is made a FIFO beforehand, so that the writer
 * is seen to be inside its write loop (its bytes arrive) when the signal
 * is sent, and stays there (the FIFO is full). */
static void a_signal_removes_a_half_written_file(void **state)
{
	(void)state;
	char dir[] = "/tmp/mp-test-util-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128], tmp[160];
	snprintf(path, sizeof path, "%s/out.png", dir);
	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(go[1]);
		mp_tmp_on_signals();
		char c;
		if (read(go[0], &c, 1) != 1)
			_exit(3);
		static uint8_t buf[1 << 20];
		mp_error e;
		mp_write_file_atomic(path, buf, sizeof buf, &e);
		_exit(4); /* the signal ends it first */
	}
	close(go[0]);
	snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)pid);
	assert_int_equal(mkfifo(tmp, 0600), 0);
	int fd = open(tmp, O_RDONLY | O_NONBLOCK);
	assert_true(fd >= 0);
	assert_int_equal(write(go[1], "g", 1), 1);
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&pf, 1, 10000), 1);
	char some[16];
	assert_true(read(fd, some, sizeof some) > 0);
	assert_int_equal(kill(pid, SIGTERM), 0);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	close(fd);
	close(go[1]);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGTERM);
	struct stat st;
	int left = lstat(tmp, &st) == 0;
	unlink(tmp);
	assert_int_equal(lstat(path, &st), -1);
	rmdir(dir);
	assert_false(left);
}

/* A signal that comes while outputs are renamed into place (mp-eval's
 * --probs, --submission, ...) waits for the last rename: the child raises
 * SIGINT between two renames and still makes the second; the release
 * then removes what is still registered and ends it by SIGINT. */
static void a_held_signal_waits_for_the_renames(void **state)
{
	(void)state;
	char dir[] = "/tmp/mp-test-util-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char a[128], a_tmp[140], b[128], b_tmp[140], left[140];
	snprintf(a, sizeof a, "%s/a.tsv", dir);
	snprintf(b, sizeof b, "%s/b.txt", dir);
	snprintf(a_tmp, sizeof a_tmp, "%s.partial", a);
	snprintf(b_tmp, sizeof b_tmp, "%s.partial", b);
	snprintf(left, sizeof left, "%s/other.partial", dir);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		mp_tmp_on_signals();
		const char *names[] = {a_tmp, b_tmp, left};
		for (int i = 0; i < 3; i++) {
			if (mp_tmp_add(names[i]) < 0)
				_exit(3);
			int fd = open(names[i], O_WRONLY | O_CREAT | O_TRUNC, 0600);
			if (fd < 0)
				_exit(3);
			close(fd);
		}
		mp_tmp_hold();
		if (rename(a_tmp, a) < 0)
			_exit(3);
		mp_tmp_remove(a_tmp);
		raise(SIGINT);
		if (rename(b_tmp, b) < 0)
			_exit(3);
		mp_tmp_remove(b_tmp);
		mp_tmp_release();
		_exit(4); /* the held signal ends it first */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	struct stat st;
	int have_a = stat(a, &st) == 0, have_b = stat(b, &st) == 0;
	int have_left = stat(left, &st) == 0;
	unlink(a);
	unlink(b);
	unlink(left);
	unlink(a_tmp);
	unlink(b_tmp);
	rmdir(dir);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGINT);
	assert_true(have_a);
	assert_true(have_b);
	assert_false(have_left);
}

static atomic_int raise_now, handled;
static void (*tmp_handler)(int);

static void note_handled(int sig)
{
	tmp_handler(sig);
	atomic_store(&handled, 1);
}

static void *raise_on_this_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&raise_now))
		;
	raise(SIGTERM);
	for (;;)
		pause();
	return NULL;
}

/* A signal whose handler runs on another thread than the one that holds
 * and releases is never lost: the child holds and releases in a loop
 * while its second thread raises SIGTERM once. Once the handler has run,
 * it has either set SIG_DFL to end the program (the child waits for
 * that) or left the signal to a release, which has then ended the child
 * before it can look. When the handler read the hold before a release
 * and stored the signal after that release had looked for one, the
 * child lived on (about one trial in three hundred on two cores). */
static void a_signal_on_another_thread_is_not_lost_at_the_release(void **state)
{
	(void)state;
	int lived = 0;
	for (int k = 0; k < 1000; k++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			mp_tmp_on_signals();
			struct sigaction sa;
			if (sigaction(SIGTERM, NULL, &sa) < 0)
				_exit(3);
			tmp_handler = sa.sa_handler;
			sa.sa_handler = note_handled;
			pthread_t th;
			if (sigaction(SIGTERM, &sa, NULL) < 0 ||
			    pthread_create(&th, NULL, raise_on_this_thread, NULL) != 0)
				_exit(3);
			atomic_store(&raise_now, 1);
			for (;;) {
				mp_tmp_hold();
				mp_tmp_release();
				if (atomic_load(&handled))
					break;
			}
			if (sigaction(SIGTERM, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
				for (;;)
					pause(); /* the signal ends it as the handler returns */
			_exit(0);
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (WIFSIGNALED(status))
			assert_int_equal(WTERMSIG(status), SIGTERM);
		else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			lived++;
		else
			fail_msg("the child failed to start (status %d)", status);
	}
	assert_int_equal(lived, 0);
}

/* In a child: stdin and stderr closed, then guarded: a file opened next
 * gets neither number, and both still fail as closed ones do. */
static void closed_std_fds_are_not_reused(void **state)
{
	(void)state;
	char path[] = "/tmp/test_util_fdXXXXXX";
	int tmp = mkstemp(path);
	assert_true(tmp >= 0);
	close(tmp);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(0);
		close(2);
		mp_guard_std_fds();
		int code = 0;
		const int f = open(path, O_WRONLY);
		if (f <= 2)
			code |= 1;
		char c;
		if (write(2, "x", 1) != -1 || errno != EBADF)
			code |= 2;
		if (read(0, &c, 1) != -1 || errno != EBADF)
			code |= 4;
		if (fcntl(1, F_GETFD) < 0) /* open already: left alone */
			code |= 8;
		_exit(code);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	unlink(path);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void arithmetic_of(const char *desc, const char *want)
{
	char buf[128];
	mp_backend_arithmetic(desc, buf, sizeof buf);
	assert_string_equal(buf, want);
}

/* A resumed run compares this with its checkpoint's: the thread count,
 * the device and auto's note are left out, the rest kept. */
static void a_backends_arithmetic_leaves_out_threads_and_device(void **state)
{
	(void)state;
	arithmetic_of("cpu, 2 threads, fp32", "cpu, fp32");
	arithmetic_of("cpu, 1 thread, no Winograd, fp32", "cpu, no Winograd, fp32");
	arithmetic_of("cpu, 16 threads, fp32 (this build has no CUDA backend)", "cpu, fp32");
	arithmetic_of("cpu-ref, 3 threads, fp32", "cpu-ref, fp32");
	arithmetic_of("cuda, NVIDIA H200, sm_90, 140 GiB, bf16", "cuda, bf16");
	arithmetic_of("cuda, NVIDIA H200, sm_90, 140 GiB, bf16, activations in bf16",
		      "cuda, bf16, activations in bf16");
	char small[8];
	mp_backend_arithmetic("cuda, NVIDIA H200, sm_90, 140 GiB, fp32", small, sizeof small);
	assert_string_equal(small, "cuda, f");
	/* the descriptions mp_backend_open makes: any thread count alike */
	char d1[256], d2[256], a1[128], a2[128];
	mp_error e;
	mp_backend *b1 = mp_backend_open("cpu", 1, -1, "auto", d1, sizeof d1, &e);
	mp_backend *b2 = mp_backend_open("cpu", 3, -1, "fp32", d2, sizeof d2, &e);
	assert_non_null(b1);
	assert_non_null(b2);
	mp_backend_arithmetic(d1, a1, sizeof a1);
	mp_backend_arithmetic(d2, a2, sizeof a2);
	assert_string_equal(a1, a2);
	assert_string_equal(a1, getenv("MP_CPU_WINOGRAD") && !strcmp(getenv("MP_CPU_WINOGRAD"), "0")
					? "cpu, no Winograd, fp32" : "cpu, fp32");
	mp_backend_free(b1);
	mp_backend_free(b2);
	b1 = mp_backend_open("cpu-ref", 2, -1, "auto", d1, sizeof d1, &e);
	assert_non_null(b1);
	mp_backend_arithmetic(d1, a1, sizeof a1);
	assert_string_equal(a1, "cpu-ref, fp32");
	mp_backend_free(b1);
}

/* A FIFO without a writer is refused, not waited on (the alarm ends a
 * wait that never would). */
static void a_fifo_is_not_read(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_util_fifoXXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[64];
	snprintf(path, sizeof path, "%s/f", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	uint8_t *buf = NULL;
	size_t len = 0;
	mp_error e;
	alarm(10);
	int rc = mp_read_file(path, 1 << 20, &buf, &len, &e);
	alarm(0);
	unlink(path);
	rmdir(dir);
	assert_int_equal(rc, -1);
	assert_string_equal(e.msg, "not a regular file (a FIFO)");
	assert_int_equal(mp_read_file("/dev/null", 1 << 20, &buf, &len, &e), -1);
	assert_string_equal(e.msg, "not a regular file (a character device)");
}

/* A chain of links, relative and absolute, to a file that need not exist;
 * a loop is an error. */
static void links_are_followed_to_the_file_they_name(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_util_linkXXXXXX";
	assert_non_null(mkdtemp(dir));
	char a[64], b[64], sub[64], abs_c[64], loop[64], out[256], want[128];
	snprintf(a, sizeof a, "%s/a", dir);
	snprintf(sub, sizeof sub, "%s/sub", dir);
	snprintf(b, sizeof b, "%s/sub/b", dir);
	snprintf(abs_c, sizeof abs_c, "%s/c", dir);
	snprintf(loop, sizeof loop, "%s/loop", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_int_equal(symlink("sub/b", a), 0); /* relative to a's directory */
	assert_int_equal(symlink(abs_c, b), 0);	  /* absolute, c not there */
	assert_int_equal(symlink("loop", loop), 0);
	mp_error e;
	assert_int_equal(mp_follow_links(a, out, sizeof out, &e), 0);
	assert_string_equal(out, abs_c);
	assert_int_equal(mp_follow_links(abs_c, out, sizeof out, &e), 0);
	assert_string_equal(out, abs_c);
	assert_int_equal(mp_follow_links("no-such-name", out, sizeof out, &e), 0);
	assert_string_equal(out, "no-such-name");
	assert_int_equal(mp_follow_links(loop, out, sizeof out, &e), -1);
	snprintf(want, sizeof want, "%s: %s", loop, strerror(ELOOP));
	assert_string_equal(e.msg, want);
	assert_int_equal(mp_follow_links(a, out, 8, &e), -1);
	unlink(a);
	unlink(b);
	unlink(loop);
	rmdir(sub);
	rmdir(dir);
}

/* Standard output is "-" and the file descriptor 1 is open on, by any
 * name, unless that is a character device that outputs may share. */
static void stdout_by_another_name(void **state)
{
	(void)state;
	char path[] = "/tmp/test_util_stdoutXXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	int saved = dup(STDOUT_FILENO);
	fflush(stdout);
	assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
	int file = mp_names_stdout(path), dev = mp_names_stdout("/dev/stdout"),
	    dash = mp_names_stdout("-"), other = mp_names_stdout("/tmp");
	int null_fd = open("/dev/null", O_WRONLY);
	assert_int_equal(dup2(null_fd, STDOUT_FILENO), STDOUT_FILENO);
	int null = mp_names_stdout("/dev/null");
	assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
	close(saved);
	close(null_fd);
	close(fd);
	unlink(path);
	assert_true(file);
	assert_true(dev);
	assert_true(dash);
	assert_false(other);
	assert_false(null);
}

/* A thread that moves a link on to new files and removes the one it named,
 * as mp-train does with last.safetensors and --keep 1. */
typedef struct {
	const char *dir;
	atomic_int stop, moves;
} mover;

static void *move_link(void *arg)
{
	mover *m = arg;
	char name[64], file[128], old[128] = "", tmp[128], link[128], to[3200];
	snprintf(tmp, sizeof tmp, "%s/last.tmp", m->dir);
	snprintf(link, sizeof link, "%s/last", m->dir);
	for (int i = 1; !atomic_load(&m->stop); i++) {
		snprintf(name, sizeof name, "file-%06d", i);
		snprintf(file, sizeof file, "%s/%s", m->dir, name);
		FILE *f = fopen(file, "w");
		if (!f || fputs("whole", f) < 0 || fclose(f) != 0)
			return NULL;
		/* a long way to the file: the reader is often still on it when
		 * the file goes, as a reader that lost the processor would be */
		size_t n = 0;
		while (n + 5 + sizeof name < sizeof to)
			n += (size_t)snprintf(to + n, sizeof to - n, "s/../");
		snprintf(to + n, sizeof to - n, "%s", name);
		if (symlink(to, tmp) < 0 || rename(tmp, link) < 0)
			return NULL;
		if (old[0])
			unlink(old);
		memcpy(old, file, sizeof old);
		atomic_store(&m->moves, i);
	}
	return NULL;
}

/* A link read while it is moved on reads the file it names then; one that
 * names a missing file fails, at once. */
static void a_link_moved_on_is_followed_to_its_new_file(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_util_moveXXXXXX";
	assert_non_null(mkdtemp(dir));
	mover m = {.dir = dir};
	atomic_init(&m.stop, 0);
	atomic_init(&m.moves, 0);
	char link[128], sub[128];
	snprintf(link, sizeof link, "%s/last", dir);
	snprintf(sub, sizeof sub, "%s/s", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, move_link, &m), 0);
	int failed = 0, reads = 0, sniffs = 0;
	char why[sizeof ((mp_error *)0)->msg] = "";
	for (int i = 0; i < 4000; i++) {
		uint8_t *buf;
		size_t len;
		mp_error e;
		if (mp_read_file(link, 100, &buf, &len, &e) == 0) {
			reads++;
			assert_int_equal(len, 5);
			free(buf);
		} else if (reads) { /* not before the first link is made */
			failed++;
			snprintf(why, sizeof why, "%s", e.msg);
		}
		struct stat st;
		sniffs += mp_stat_follow(link, &st) == 0;
	}
	atomic_store(&m.stop, 1);
	assert_int_equal(pthread_join(th, NULL), 0);
	if (failed)
		fail_msg("%d of 4000 reads failed (%s), %d moves", failed, why,
			 atomic_load(&m.moves));
	assert_true(reads > 0);
	assert_true(sniffs > 0);
	/* a link that dangles is an error that names what it links to */
	char dangling[128];
	snprintf(dangling, sizeof dangling, "%s/dangling", dir);
	assert_int_equal(symlink("no-such-file", dangling), 0);
	uint8_t *buf;
	size_t len;
	mp_error e;
	assert_int_equal(mp_read_file(dangling, 100, &buf, &len, &e), -1);
	assert_string_equal(e.msg, "a symbolic link to no-such-file, which does not exist");
	struct stat st;
	assert_int_equal(mp_stat_follow(dangling, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(mp_open_follow(dangling, O_RDONLY), -1);
	assert_int_equal(errno, ENOENT);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* the CPUs the process may use, not those online: taskset -c 0 is one */
/* mp_parse_decimal: digits only, no sign, blank or leading zero, up to max
 * exactly, whatever max is. */
static void decimal_is_digits_up_to_max(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		uint64_t max;
		int ok;
		uint64_t v;
	} cases[] = {
		{"0", 0, 1, 0}, {"1", 0, 0, 0}, {"9", 8, 0, 0}, {"8", 8, 1, 8},
		{"10", 9, 0, 0}, {"1000", 1000, 1, 1000}, {"1001", 1000, 0, 0},
		{"", 10, 0, 0}, {"00", 10, 0, 0}, {"01", 10, 0, 0}, {"+1", 10, 0, 0},
		{"-1", 10, 0, 0}, {"-0", 10, 0, 0}, {" 1", 10, 0, 0}, {"1 ", 10, 0, 0},
		{"1.0", 10, 0, 0}, {"1e0", 10, 0, 0}, {"0x1", 10, 0, 0},
		{"9007199254740992", (uint64_t)1 << 53, 1, (uint64_t)1 << 53},
		{"9007199254740993", (uint64_t)1 << 53, 0, 0},
		{"18446744073709551615", UINT64_MAX, 1, UINT64_MAX},
		{"18446744073709551616", UINT64_MAX, 0, 0},
		{"99999999999999999999999", UINT64_MAX, 0, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t v = 12345;
		int rc = mp_parse_decimal(cases[i].s, strlen(cases[i].s), cases[i].max, &v);
		if (rc != (cases[i].ok ? 0 : -1) || (cases[i].ok && v != cases[i].v))
			fail_msg("\"%s\" up to %llu: rc %d, value %llu", cases[i].s,
				 (unsigned long long)cases[i].max, rc, (unsigned long long)v);
	}
	/* n bytes, not up to a NUL: the digits of a longer text */
	uint64_t v;
	assert_int_equal(mp_parse_decimal("12,34", 2, 100, &v), 0);
	assert_int_equal(v, 12);
}

static void cpu_count_is_the_affinitys(void **state)
{
	(void)state;
	cpu_set_t all, one;
	assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
	assert_int_equal(mp_cpu_count(), CPU_COUNT(&all));
	int first = 0;
	while (!CPU_ISSET(first, &all))
		first++;
	CPU_ZERO(&one);
	CPU_SET(first, &one);
	assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
	const int counted = mp_cpu_count();
	assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
	assert_int_equal(counted, 1);
}

/* --json reports: each number reads back as the same double (cJSON's own
 * printer stops at 15 digits where they come close: 9/53 as
 * 0.169811320754717), whole numbers in digits, non-finite ones null. */
static void the_parent_of_a_path_is_its_directory(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
		{"file", "."}, {"dir/file", "dir"}, {"/file", "/"},
		{"/a/b/c", "/a/b"}, {"a/b/", "a/b"}, {"./x", "."},
	};
	char dir[16];
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		assert_int_equal(mp_parent_dir(cases[k][0], dir, sizeof dir), 0);
		assert_string_equal(dir, cases[k][1]);
	}
	/* 15 bytes and the terminator fit; 16 do not */
	assert_int_equal(mp_parent_dir("abcdefghijklmno/f", dir, sizeof dir), 0);
	assert_string_equal(dir, "abcdefghijklmno");
	assert_int_equal(mp_parent_dir("abcdefghijklmnop/f", dir, sizeof dir), -1);
}

static void json_numbers_read_back_exactly(void **state)
{
	(void)state;
	const double values[] = {9.0 / 53, 1.0 / 3, 0.2, 16.0 / 147, 11.0 / 13, -0.1, 1e-300,
				 123456789012345678.0, 3e12, 0, 5, -7, 0.1 + 0.2};
	const size_t n = sizeof values / sizeof values[0];
	cJSON *a = cJSON_CreateArray();
	assert_non_null(a);
	for (size_t i = 0; i < n; i++)
		assert_true(cJSON_AddItemToArray(a, cJSON_CreateNumber(values[i])));
	cJSON *o = cJSON_CreateObject();
	assert_non_null(o);
	assert_true(cJSON_AddItemToObject(o, "v", a));
	assert_non_null(cJSON_AddNumberToObject(o, "inf", INFINITY));
	char *text = mp_json_print(o);
	assert_non_null(text);
	cJSON *back = cJSON_Parse(text);
	assert_non_null(back);
	const cJSON *v = cJSON_GetObjectItem(back, "v");
	assert_int_equal(cJSON_GetArraySize(v), n);
	for (size_t i = 0; i < n; i++)
		assert_true(cJSON_GetArrayItem(v, (int)i)->valuedouble == values[i]);
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(back, "inf")));
	assert_non_null(strstr(text, "0.16981132075471697"));
	assert_non_null(strstr(text, "3000000000000"));
	assert_null(strstr(text, "e+12"));
	cJSON_Delete(back);
	cJSON_Delete(o);
	free(text);
}

/* What the bar draws for updates at counts done[0..count-1], one after
 * the other a hundredth of a second apart, stderr a terminal (a pty)
 * meanwhile, the first of them elapsed seconds after the bar started at
 * base. The times are given, not read, so that a loaded machine draws the
 * same. */
static void draw_updates(uint64_t base, const uint64_t *done, int count, uint64_t total,
			 double elapsed, char *out, size_t n)
{
	int master = posix_openpt(O_RDWR | O_NOCTTY);
	assert_true(master >= 0);
	assert_int_equal(grantpt(master), 0);
	assert_int_equal(unlockpt(master), 0);
	int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
	assert_true(slave >= 0);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(slave, STDERR_FILENO) >= 0);
	mp_progress p;
	mp_progress_init(&p, "evaluate", total, 0);
	mp_progress_start_at(&p, base);
	p.start = 1000;
	for (int i = 0; i < count; i++)
		mp_progress_update_at(&p, done[i], NULL, p.start + elapsed + 0.01 * i);
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	close(slave);
	/* A pty hands the writes to its reader in pieces, later on a loaded
	 * machine: read until the reader is told the other side is closed
	 * (EIO, once everything written has been read). */
	size_t got = 0;
	for (;;) {
		ssize_t r = read(master, out + got, n - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		assert_true(got < n - 1);
	}
	assert_true(got > 0);
	out[got] = '\0';
	close(master);
}

static void draw_progress(uint64_t base, uint64_t done, uint64_t total, double elapsed,
			  char *out, size_t n)
{
	draw_updates(base, &done, 1, total, elapsed, out, n);
}

/* A run resumed 700 batches into an epoch: the bar counts those batches
 * but its rate and time left are this run's, not 89,600 images in the
 * first seconds (thousands of images/s, a few seconds left, for an epoch
 * that has minutes to go). */
static void a_resumed_bar_rates_only_its_own_work(void **state)
{
	(void)state;
	char out[512];
	draw_progress(0, 1000, 4000, 10, out, sizeof out);
	assert_non_null(strstr(out, " 1000/4000 100/s "));
	assert_non_null(strstr(out, "ETA 00:30"));
	draw_progress(89600, 90600, 99968, 10, out, sizeof out);
	assert_non_null(strstr(out, " 90600/99968 100/s "));
	assert_non_null(strstr(out, "ETA 01:33"));
}

/* A stream's count has no total: no "640/0" beside an empty bar (nor a
 * full one with no time left), and a draw at most every tenth of a
 * second, not one per batch of 16 images. */
static void an_unknown_total_shows_the_count_drawn_now_and_then(void **state)
{
	(void)state;
	char out[512];
	const uint64_t done[] = {1000, 1016, 1032};
	draw_updates(0, done, 3, 0, 10, out, sizeof out);
	assert_non_null(strstr(out, "evaluate 1000 100/s 00:10"));
	assert_null(strstr(out, "/0"));
	assert_null(strstr(out, "ETA"));
	assert_null(strstr(out, "1016"));
	/* a known total draws its end at once */
	const uint64_t to_end[] = {1000, 4000};
	draw_updates(0, to_end, 2, 4000, 10, out, sizeof out);
	assert_non_null(strstr(out, " 4000/4000 "));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(short_messages_are_kept_whole),
		cmocka_unit_test(a_long_path_loses_its_middle_not_the_reason),
		cmocka_unit_test(an_argument_may_be_the_message_itself),
		cmocka_unit_test(the_cut_falls_between_utf8_characters),
		cmocka_unit_test(a_signal_removes_a_half_written_file),
		cmocka_unit_test(a_held_signal_waits_for_the_renames),
		cmocka_unit_test(a_signal_on_another_thread_is_not_lost_at_the_release),
		cmocka_unit_test(closed_std_fds_are_not_reused),
		cmocka_unit_test(a_backends_arithmetic_leaves_out_threads_and_device),
		cmocka_unit_test(a_fifo_is_not_read),
		cmocka_unit_test(links_are_followed_to_the_file_they_name),
		cmocka_unit_test(stdout_by_another_name),
		cmocka_unit_test(a_link_moved_on_is_followed_to_its_new_file),
		cmocka_unit_test(cpu_count_is_the_affinitys),
		cmocka_unit_test(decimal_is_digits_up_to_max),
		cmocka_unit_test(the_parent_of_a_path_is_its_directory),
		cmocka_unit_test(json_numbers_read_back_exactly),
		cmocka_unit_test(a_resumed_bar_rates_only_its_own_work),
		cmocka_unit_test(an_unknown_total_shows_the_count_drawn_now_and_then),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
