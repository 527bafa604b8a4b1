/* Small shared helpers: errors, checked allocation, number parsing,
 * little-endian fields, CRC32, files, time, a seeded RNG, a progress bar. */
#ifndef MP_UTIL_H
#define MP_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MP_VERSION "0.1.0"

/* Library functions report failures through an mp_error and return -1;
 * the program decides how to print it and which exit status to use. A
 * message longer than msg keeps its start and its end around "...", so
 * that a long path cannot push out the reason after it. */
typedef struct {
	char msg[1024];
} mp_error;

int mp_seterr(mp_error *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Program name for messages; set once by each tool's main(). */
extern const char *mp_progname;
void mp_set_progname(const char *argv0);
/* A standard descriptor closed at start (2>&-) would go to the next file
 * opened, a DB or a checkpoint, and a message for stderr into that file:
 * each closed one gets /dev/null opened the other way (0 for writing, 1
 * and 2 for reading), so that later files get other numbers and using
 * the descriptor still fails with EBADF, as closed. Each tool's first
 * call. */
void mp_guard_std_fds(void);
/* A write past the file size limit (ulimit -f) would end the program by
 * SIGXFSZ, with no message and its temporary files left: ignored, the
 * write fails with EFBIG ("File too large"), which the writer reports,
 * naming the file, and cleans up after. Each tool's call at start. */
void mp_writes_fail_past_size_limit(void);
void mp_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mp_errx(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

void *mp_xmalloc(size_t n);
void *mp_xcalloc(size_t n, size_t size);
void *mp_xrealloc(void *p, size_t n);
char *mp_xstrdup(const char *s);

/* Whether text p starts as a number is written in decimal: a sign, then
 * a digit or a point and a digit. strtol and strtod would also skip
 * leading blanks, and strtod read "0x10" as 16. */
int mp_number_start(const char *p);

/* A whole number written as a file format writes one: the n bytes at s are
 * ASCII digits, with no sign, blank or leading zero ("0" itself aside), and
 * their value is at most max. Returns 0 and sets *out, or -1. */
int mp_parse_decimal(const char *s, size_t n, uint64_t max, uint64_t *out);

/* Range-checked option parsing: on failure prints
 * "prog: --opt: "8o" is not a number from MIN to MAX" and returns -1. */
int mp_parse_long(const char *opt, const char *s, long min, long max, long *out);
int mp_parse_double(const char *opt, const char *s, double min, double max,
		    double *out);

/* A comma-separated list of min_count to max_count numbers in [min, max]
 * ("32,64,128"); returns the count, or -1 after a message like
 * mp_parse_double's. */
int mp_parse_double_list(const char *opt, const char *s, double min, double max,
			 double *out, int min_count, int max_count);
/* The same for whole numbers, written in decimal as mp_parse_long reads
 * them ("112,128,160"): no fraction, exponent or hexadecimal. */
int mp_parse_long_list(const char *opt, const char *s, long min, long max, long *out,
		       int min_count, int max_count);

/* Little-endian fixed-width fields. */
static inline void mp_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void mp_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void mp_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t mp_get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t mp_get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline uint64_t mp_get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* zlib's CRC32 over any length. */
/* Why opening path failed with err: strerror's text, but for a symbolic
 * link whose file does not exist, that and what the link names (in buf). */
const char *mp_open_error(const char *path, int err, char *buf, size_t size);
uint32_t mp_crc32(uint32_t crc, const void *buf, size_t len);

/* open(2) and stat(2) of a path that may be a symbolic link replaced
 * while they follow it (last.safetensors of a running mp-train, moved on
 * to a new checkpoint as the one it named is pruned): a failure with
 * ENOENT on a link that names another file by then is tried again, with
 * that file. A link that dangles still fails with ENOENT. */
struct stat;
int mp_open_follow(const char *path, int flags);
int mp_stat_follow(const char *path, struct stat *st);
/* Reads a whole regular file of at most max_bytes into a malloc'ed buffer
 * (opened by mp_open_follow). On failure errno holds the system's cause,
 * or 0 where the file itself is wrong (a directory, too large). */
int mp_read_file(const char *path, size_t max_bytes, uint8_t **buf, size_t *len,
		 mp_error *e);
/* The environment variable name, or NULL when it is unset or empty (an
 * empty value means the default, as for the CUDA backend's variables). */
const char *mp_getenv(const char *name);
/* Whether digits, the end of a temporary name, is the id of a process
 * that no longer runs, or has ended and is not yet reaped (a zombie), on
 * this host: a pid names nothing elsewhere. */
int mp_pid_gone(const char *digits);
/* Calls fn for each entry "<path><tag><pid>" beside path whose process
 * no longer runs, with its name joined to path's directory as path gives
 * it; stops when fn returns nonzero. */
void mp_each_stale(const char *path, const char *tag,
		   int (*fn)(const char *entry, void *arg), void *arg);
/* Removes the regular files "<path><tag><pid>" beside path (tag
 * ".partial-", ".tmp-") whose process no longer runs: what a writer
 * killed outright left of its temporary files. Each is named in a
 * warning. */
void mp_remove_stale_files(const char *path, const char *tag);
/* Makes a rename into path's directory durable (fsync of the directory):
 * best effort, as the file is already in place and complete. */
void mp_sync_parent_dir(const char *path);
/* The directory that holds path ("." for a bare name, "/" for one at the
 * root) into dir of n bytes; -1 if it does not fit. */
int mp_parent_dir(const char *path, char *dir, size_t n);
/* Writes a whole buffer to a file, atomically (temporary name + rename).
 * The temporary name is registered with mp_tmp_add while it exists. */
int mp_write_file_atomic(const char *path, const void *buf, size_t len,
			 mp_error *e);
/* Writes a whole buffer to an output the user named: a symbolic link is
 * followed, so that the file it names is replaced and the link stays; an
 * existing file that is not a regular one (/dev/null, a FIFO), and the
 * file standard output or error is open on (/dev/stderr redirected to a
 * file), are written in place; a directory is an error; anything else is
 * written atomically (mp_write_file_atomic). */
int mp_write_output(const char *path, const void *buf, size_t len, mp_error *e);
/* Removes a directory we created, which holds only plain files. A
 * symbolic link under path is not followed (-1, ELOOP), and a directory
 * holding anything else (a subdirectory, a link) is left whole (-1,
 * ENOTEMPTY). 0 also when path does not exist. */
int mp_remove_tree(const char *path);
/* Whether paths a and b name the same file: the same device and inode
 * where both exist, else the same directory (after links) and name. */
int mp_same_file(const char *a, const char *b);

/* path's directory, made canonical (absolute, without links), and its last
 * name, in out; the file itself need not exist. -1 when the directory does
 * not exist or out is too short. */
int mp_canonical_path(const char *path, char *out, size_t n);

/* The CPUs this process may run on (its affinity: taskset, a container's
 * cpuset), as nproc counts them; the online ones where that is unknown. */
int mp_cpu_count(void);
/* Whether path names standard output: "-", or the file descriptor 1 is
 * open on under another name (/dev/stdout, /dev/fd/1, the file it is
 * redirected to), unless that is a character device such as /dev/null or
 * a terminal, which several outputs may share. */
int mp_names_stdout(const char *path);
/* Whether path names the file that descriptor fd is open on, unless that
 * is a character device (mp_names_stdout's test, for any descriptor). */
int mp_names_fd(const char *path, int fd);
/* path with the symbolic links of its last name followed (a link's target
 * need not exist), in out: a file written under a temporary name beside
 * that and renamed over it replaces the file the link names, not the link.
 * path itself when it is no link. -1 with the reason in e (a loop, a name
 * too long). */
int mp_follow_links(const char *path, char *out, size_t size, mp_error *e);
/* Temporary files that a fatal signal removes. After mp_tmp_on_signals(),
 * SIGHUP, SIGINT, SIGTERM and SIGPIPE (the reader of a pipe gone) remove
 * every file registered by mp_tmp_add and then end the program by the same
 * signal, as if it had not been caught; a signal ignored when the program
 * started (nohup, a background job) stays ignored. At most MP_TMP_MAX
 * files at a time: mp_tmp_add returns -1 for one more, or for a path of
 * PATH_MAX bytes or more, and that file is then not removed. Any thread
 * may add and remove. */
#define MP_TMP_MAX 8
void mp_tmp_on_signals(void);
/* Sends SIGHUP, SIGINT and SIGTERM (and SIGPIPE with pipe) to handler,
 * except those ignored when the program started (nohup, a background job
 * of a script), which stay ignored; block_all: no other signal interrupts
 * the handler; restart: a read, write or open that the signal comes
 * during goes on (SA_RESTART) rather than fail with EINTR, for a program
 * that stops only when its work reaches a point of its choosing. */
void mp_catch_stop_signals(void (*handler)(int), int pipe, int block_all, int restart);
int mp_tmp_add(const char *path);
void mp_tmp_remove(const char *path);
/* Between mp_tmp_hold and mp_tmp_release a signal of mp_tmp_on_signals
 * waits: several files renamed into place there are all renamed or none
 * is. mp_tmp_release then acts on a signal that came meanwhile (the
 * files still registered are removed and the program ends by it), on
 * whichever thread its handler ran; mp_tmp_hold on one whose handler,
 * on another thread, began before the hold. */
void mp_tmp_hold(void);
void mp_tmp_release(void);
/* Offset of the first byte of buf[0..len) that breaks UTF-8 (overlong
 * forms, surrogates and code points above U+10FFFF included), or len if
 * there is none. */
size_t mp_utf8_bad_at(const void *buf, size_t len);
/* JSON text made valid UTF-8, in a new string (NULL when out of memory):
 * each byte that breaks UTF-8, which in JSON text can only lie inside a
 * string (a name or path as the file system has it), becomes the escape
 * \\udcXX of the byte's value XX (80 to ff), as Python's surrogateescape
 * has it, so that os.fsencode gives back the bytes. */
char *mp_json_utf8(const char *json);
/* s[0..n) as one field of a tab-separated line: tab, newline, carriage
 * return and backslash written as \t, \n, \r and \\. EOF as soon as a write
 * fails (nothing more is written), 0 otherwise. */
int mp_put_tsv_field(FILE *f, const char *s, size_t n);

double mp_now(void);

/* A count such as a network's FLOPs in G, or in M below 1e9, where G
 * would print a small network's as 0.000: v scaled, the prefix in
 * *prefix. */
double mp_giga_or_mega(double v, const char **prefix);

/* Seeded xoshiro256** generator: the same seed gives the same sequence on
 * every machine. */
typedef struct {
	uint64_t s[4];
} mp_rng;
void mp_rng_seed(mp_rng *r, uint64_t seed);
uint64_t mp_rng_next(mp_rng *r);
uint64_t mp_rng_below(mp_rng *r, uint64_t n); /* uniform in [0, n) */
double mp_rng_uniform(mp_rng *r);	      /* uniform in [0, 1) */

/* Progress bar on stderr, shown only when stderr is a terminal; a total of
 * 0 is unknown (a stream): the count and the rate alone. */
typedef struct {
	int enabled;
	uint64_t total, base;
	double start, last_draw;
	const char *what;
} mp_progress;
void mp_progress_init(mp_progress *p, const char *what, uint64_t total, int quiet);
/* The bar starts with done already done (a resumed epoch's batches): they
 * count in the bar, not in the rate and the time left. */
void mp_progress_start_at(mp_progress *p, uint64_t done);
void mp_progress_update(mp_progress *p, uint64_t done, const char *extra);
/* The same at the time now (mp_now's clock), so that what a bar draws can
 * be checked without depending on how fast the caller runs. */
void mp_progress_update_at(mp_progress *p, uint64_t done, const char *extra, double now);
void mp_progress_done(mp_progress *p);

#endif
