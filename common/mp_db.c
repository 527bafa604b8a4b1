#include "mp_db.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

struct mp_db_writer {
	MDB_env *env;
	MDB_dbi dbi;
	uint64_t map_size;
	unsigned growths;
	int replace; /* -f: an existing DB under target may be replaced */
	char target[PATH_MAX];
	char partial[PATH_MAX];
};

struct mp_db_reader {
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	char path[PATH_MAX];
	char file[PATH_MAX]; /* path/data.mdb, for messages */
};

int mp_db_is_db(const char *path)
{
	char f[PATH_MAX];
	struct stat st;
	if (snprintf(f, sizeof f, "%s/data.mdb", path) >= (int)sizeof f)
		return 0;
	return stat(f, &st) == 0 && S_ISREG(st.st_mode);
}

static void batch_key(char *key, size_t n, uint64_t index)
{
	snprintf(key, n, "mb/%08llu", (unsigned long long)index);
}

static int remove_stale_partial(const char *entry, void *arg)
{
	(void)arg;
	if (mp_remove_tree(entry) == 0)
		mp_warnx("removed %s, left by an interrupted run", entry);
	else if (errno != ENOENT)
		mp_warnx("%s: left by an interrupted run, but not removed: %s", entry,
			 errno == ELOOP	      ? "it is a symbolic link"
			 : errno == ENOTEMPTY ? "it holds more than plain files"
					      : strerror(errno));
	return 0;
}

/* Removes "<base>.partial-<pid>" (a build) and "<base>.old-<pid>" (a
 * replaced DB) directories whose writer no longer runs. A pid is only
 * meaningful on this host: writers on other hosts sharing the directory
 * must use other names. */
static void remove_stale_partials(const char *target)
{
	mp_each_stale(target, ".partial-", remove_stale_partial, NULL);
	mp_each_stale(target, ".old-", remove_stale_partial, NULL);
}

/* A replacement on a file system without RENAME_EXCHANGE moves the
 * earlier DB aside ("<target>.old-<pid>") before it renames the new one in;
 * a writer killed between the two left no DB under the name. The earlier
 * one goes back, before anything else looks at the name: it was the user's,
 * and the new one was never in place. */
static int put_back(const char *entry, void *target)
{
	if (!mp_db_is_db(entry))
		return 0;
	if (rename(entry, target) == 0) {
		mp_sync_parent_dir(target);
		mp_warnx("put %s back as %s: an interrupted run replacing it had moved it aside",
			 entry, (const char *)target);
	}
	return 1;
}

static void put_back_moved_aside(const char *target)
{
	struct stat st;
	if (lstat(target, &st) == 0 || errno != ENOENT)
		return;
	mp_each_stale(target, ".old-", put_back, (void *)target);
}

/* LMDB reports a write cut short by a full disk as EIO, "Input/output
 * error", which reads like a failing device. When the DB's file system
 * has less room left than the write needed, that is what it was; and
 * likewise when the file would have grown past the file size limit
 * (ulimit -f, with SIGXFSZ ignored or caught). */
static const char *db_strerror(const mp_db_writer *w, int rc, size_t len)
{
	struct statvfs sv;
	if (rc == EIO && statvfs(w->partial, &sv) == 0 &&
	    (uint64_t)sv.f_bavail * sv.f_frsize < (uint64_t)len + (1u << 20))
		return strerror(ENOSPC);
	struct rlimit rl;
	struct stat st;
	char data[sizeof w->partial + sizeof "/data.mdb"];
	snprintf(data, sizeof data, "%s/data.mdb", w->partial);
	if (rc == EIO && getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    stat(data, &st) == 0 && (uint64_t)st.st_size + len > (uint64_t)rl.rlim_cur)
		return strerror(EFBIG);
	return mdb_strerror(rc);
}

#define LMDB_CHECK(call, what)                                                  \
	do {                                                                    \
		int rc_ = (call);                                               \
		if (rc_ != MDB_SUCCESS) {                                       \
			mp_seterr(e, "%s: %s: %s", w->target, what, mdb_strerror(rc_)); \
			goto fail;                                              \
		}                                                               \
	} while (0)

/* The first entry of DB directory path that is not one of LMDB's two
 * files, into name; 0 when there is none. */
static int db_dir_other(const char *path, char *name, size_t cap)
{
	DIR *d = opendir(path);
	if (!d)
		return 0; /* the rename reports what is wrong */
	struct dirent *de;
	int found = 0;
	while (!found && (de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		if (strcmp(n, ".") && strcmp(n, "..") && strcmp(n, "data.mdb") &&
		    strcmp(n, "lock.mdb")) {
			snprintf(name, cap, "%s", n);
			found = 1;
		}
	}
	closedir(d);
	return found;
}

/* Only a directory that holds a DB, and nothing else, is replaced: what
 * else the user keeps there would go with it. A symbolic link is never
 * followed, even to one, and the message says so rather than call the
 * DB it names something else. */
static int refuse_target(const char *path, const struct stat *st, mp_error *e)
{
	if (S_ISLNK(st->st_mode))
		return mp_seterr(e, "%s: is a symbolic link; not replacing it", path);
	if (!S_ISDIR(st->st_mode) || !mp_db_is_db(path))
		return mp_seterr(e, "%s: exists and is not a dataset DB; not replacing it", path);
	char other[NAME_MAX + 1];
	if (db_dir_other(path, other, sizeof other))
		return mp_seterr(e, "%s: holds %s besides the DB's data.mdb and lock.mdb; not "
				 "replacing it", path, other);
	return 0;
}

/* Removes the DB a replacement displaced; says where it stays when that
 * fails (something was put into it while this run worked). */
static void remove_replaced(const char *path)
{
	if (mp_remove_tree(path) < 0)
		mp_warnx("%s: the replaced DB could not be removed (%s); it is left there",
			 path, errno == ENOTEMPTY ? "it holds more than plain files"
						  : strerror(errno));
}

mp_db_writer *mp_db_writer_open(const char *path_arg, uint64_t map_size, int replace,
				mp_error *e)
{
	mp_db_writer *w = calloc(1, sizeof *w);
	if (!w) {
		mp_seterr(e, "out of memory");
		return NULL;
	}
	/* "db/" and "db/." name the directory "db": its partial directory
	 * must be built beside it, not inside it. */
	size_t n = strlen(path_arg);
	if (n >= sizeof w->target) {
		mp_seterr(e, "%s: path too long", path_arg);
		free(w);
		return NULL;
	}
	memcpy(w->target, path_arg, n + 1);
	for (;;) {
		if (n > 1 && w->target[n - 1] == '/')
			n--;
		else if (n > 2 && w->target[n - 1] == '.' && w->target[n - 2] == '/')
			n -= 2;
		else
			break;
		w->target[n] = '\0';
	}
	const char *path = w->target;
	put_back_moved_aside(path);
	struct stat st;
	/* lstat: a symbolic link (even a dangling one) holds the name, and
	 * rename() could not put a directory in its place. */
	if (lstat(path, &st) == 0) {
		if (!replace) {
			mp_seterr(e, "%s: already exists (use --force to replace it)", path);
			free(w);
			return NULL;
		}
		if (refuse_target(path, &st, e) < 0) {
			free(w);
			return NULL;
		}
	}
	if (snprintf(w->partial, sizeof w->partial, "%s.partial-%ld", path,
		     (long)getpid()) >= (int)sizeof w->partial) {
		mp_seterr(e, "%s: path too long", path);
		free(w);
		return NULL;
	}
	remove_stale_partials(path);
	mp_remove_tree(w->partial); /* a leftover of an earlier process with our pid */
	if (mkdir(w->partial, 0755) < 0) {
		/* named as asked for: the partial name is ours, not the user's */
		mp_seterr(e, "%s: cannot create: %s", path, strerror(errno));
		free(w);
		return NULL;
	}
	w->replace = replace;
	MDB_txn *txn = NULL;
	/* The initial map only saves growing it: where an address-space
	 * limit (ulimit -v, a batch system's) leaves no room for it, a
	 * smaller one, down to 1 MiB, grows as the DB does. */
	for (;;) {
		w->map_size = map_size;
		LMDB_CHECK(mdb_env_create(&w->env), "mdb_env_create");
		LMDB_CHECK(mdb_env_set_mapsize(w->env, (size_t)map_size), "mdb_env_set_mapsize");
		/* No per-commit fsync: the environment is synced once before
		 * the rename, and an interrupted build is thrown away anyway. */
		int rc = mdb_env_open(w->env, w->partial, MDB_NOSYNC | MDB_NOMETASYNC, 0644);
		if (rc == MDB_SUCCESS)
			break;
		if (rc != ENOMEM || map_size / 2 < (1u << 20)) {
			mp_seterr(e, "%s: mdb_env_open: %s%s", w->target, mdb_strerror(rc),
				  rc == ENOMEM ? " (the address space is limited: ulimit -v?)" : "");
			goto fail;
		}
		/* a failed open leaves the environment to be closed, and its
		 * files to be started anew */
		mdb_env_close(w->env);
		w->env = NULL;
		if (mp_remove_tree(w->partial) < 0 || mkdir(w->partial, 0755) < 0) {
			mp_seterr(e, "%s: cannot create: %s", path, strerror(errno));
			goto fail;
		}
		map_size /= 2;
	}
	LMDB_CHECK(mdb_txn_begin(w->env, NULL, 0, &txn), "mdb_txn_begin");
	LMDB_CHECK(mdb_dbi_open(txn, NULL, 0, &w->dbi), "mdb_dbi_open");
	MDB_txn *committing = txn;
	txn = NULL; /* freed by the commit, whether it succeeds or not */
	LMDB_CHECK(mdb_txn_commit(committing), "mdb_txn_commit");
	return w;
fail:
	if (txn)
		mdb_txn_abort(txn); /* the environment closes only without one */
	if (w->env)
		mdb_env_close(w->env);
	mp_remove_tree(w->partial);
	free(w);
	return NULL;
}

/* Starts writing what was committed to the disk, without waiting: the
 * sync before the rename then waits for the last macrobatches only, not
 * for the whole DB at once while nothing else runs. A failure shows
 * there, so this one's is ignored. */
static void start_writeback(const mp_db_writer *w)
{
	int fd;
	if (mdb_env_get_fd(w->env, &fd) == 0)
		(void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

/* One put in its own transaction; on MDB_MAP_FULL the map is doubled and
 * the transaction retried (the caller still holds the bytes). With fill,
 * buf is ignored and the value is written in place. */
static int put_growing(mp_db_writer *w, const char *key, const void *buf,
		       size_t len, mp_db_fill *fill, void *ctx, mp_error *e)
{
	for (;;) {
		MDB_txn *txn;
		int rc = mdb_txn_begin(w->env, NULL, 0, &txn);
		if (rc)
			return mp_seterr(e, "%s: mdb_txn_begin: %s", w->target, mdb_strerror(rc));
		MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)buf};
		rc = mdb_put(txn, w->dbi, &k, &v, fill ? MDB_RESERVE : 0);
		if (rc == MDB_SUCCESS && fill)
			fill(ctx, v.mv_data, len);
		if (rc == MDB_SUCCESS)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
		if (rc == MDB_SUCCESS) {
			start_writeback(w);
			return 0;
		}
		if (rc != MDB_MAP_FULL)
			return mp_seterr(e, "%s: writing %s: %s", w->target, key,
					 db_strerror(w, rc, len));
		uint64_t grown = w->map_size * 2;
		while (grown < len * 2 + w->map_size)
			grown *= 2;
		rc = mdb_env_set_mapsize(w->env, (size_t)grown);
		if (rc)
			return mp_seterr(e, "%s: growing the map to %llu bytes: %s%s", w->target,
					 (unsigned long long)grown, mdb_strerror(rc),
					 rc == ENOMEM ? " (the address space is limited: ulimit -v?)"
						      : "");
		w->map_size = grown;
		w->growths++;
	}
}

int mp_db_writer_put(mp_db_writer *w, uint64_t index, const void *buf,
		     size_t len, mp_error *e)
{
	char key[32];
	batch_key(key, sizeof key, index);
	return put_growing(w, key, buf, len, NULL, NULL, e);
}

int mp_db_writer_put_fill(mp_db_writer *w, uint64_t index, size_t len, mp_db_fill *fill,
			  void *ctx, mp_error *e)
{
	char key[32];
	batch_key(key, sizeof key, index);
	return put_growing(w, key, NULL, len, fill, ctx, e);
}

/* What lies under target now, checked again at the rename: another run
 * may have put something there since mp_db_writer_open looked. */
static int check_target(const mp_db_writer *w, mp_error *e)
{
	struct stat st;
	if (lstat(w->target, &st) < 0)
		return 0;
	if (!w->replace)
		return mp_seterr(e, "%s: appeared while this run worked (another run writing "
				 "the same name?); not replacing it without --force", w->target);
	return refuse_target(w->target, &st, e);
}

static int replace_dir(const mp_db_writer *w, mp_error *e)
{
	const char *partial = w->partial, *target = w->target;
	if (check_target(w, e) < 0)
		return -1;
	/* Without -f the name must still be free: a plain rename() would
	 * put the DB in place of another run's DB, or of an empty directory,
	 * made since the check above. */
	if (!w->replace) {
		if (renameat2(AT_FDCWD, partial, AT_FDCWD, target, RENAME_NOREPLACE) == 0) {
			mp_sync_parent_dir(target);
			return 0;
		}
		if (errno == EEXIST)
			return check_target(w, e) < 0 ? -1
			       : mp_seterr(e, "%s: rename: %s", target, strerror(EEXIST));
		if (errno != EINVAL && errno != ENOSYS)
			return mp_seterr(e, "%s: rename: %s", target, strerror(errno));
		/* a file system without RENAME_NOREPLACE: the check above must do */
	}
	if (rename(partial, target) == 0) {
		mp_sync_parent_dir(target);
		return 0;
	}
	if (errno != ENOTEMPTY && errno != EEXIST)
		return mp_seterr(e, "%s: rename: %s", target, strerror(errno));
	if (!w->replace)
		return check_target(w, e) < 0 ? -1
		       : mp_seterr(e, "%s: rename: %s", target, strerror(EEXIST));
	/* The target is an earlier DB: swap the two atomically, then remove
	 * the old one, so the name always holds a complete DB. */
	if (renameat2(AT_FDCWD, partial, AT_FDCWD, target, RENAME_EXCHANGE) == 0) {
		mp_sync_parent_dir(target);
		remove_replaced(partial);
		return 0;
	}
	char old[PATH_MAX];
	if (snprintf(old, sizeof old, "%s.old-%ld", target, (long)getpid()) >= (int)sizeof old)
		return mp_seterr(e, "%s: path too long", target);
	if (rename(target, old) < 0)
		return mp_seterr(e, "%s: rename: %s", target, strerror(errno));
	if (rename(partial, target) < 0) {
		int err = errno;
		if (rename(old, target) < 0)
			return mp_seterr(e, "%s: rename: %s; the DB it held is now %s (the next "
					 "run that writes %s puts it back)", target, strerror(err), old,
					 target);
		return mp_seterr(e, "%s: rename: %s", target, strerror(err));
	}
	mp_sync_parent_dir(target);
	remove_replaced(old);
	return 0;
}

int mp_db_writer_finish(mp_db_writer *w, const char *meta_json, mp_error *e)
{
	if (put_growing(w, "meta", meta_json, strlen(meta_json), NULL, NULL, e) < 0)
		goto fail;
	int rc = mdb_env_sync(w->env, 1);
	if (rc) {
		mp_seterr(e, "%s: mdb_env_sync: %s", w->target, db_strerror(w, rc, 0));
		goto fail;
	}
	mdb_env_close(w->env);
	w->env = NULL;
	if (replace_dir(w, e) < 0)
		goto fail;
	free(w);
	return 0;
fail:
	mp_db_writer_abort(w);
	return -1;
}

void mp_db_writer_abort(mp_db_writer *w)
{
	if (!w)
		return;
	if (w->env)
		mdb_env_close(w->env);
	mp_remove_tree(w->partial);
	free(w);
}

unsigned mp_db_writer_growths(const mp_db_writer *w)
{
	return w->growths;
}

const char *mp_db_writer_partial(const mp_db_writer *w)
{
	return w->partial;
}

/* The walk below runs in a child process: a read of a page the file
 * does not hold raises SIGBUS, which the child turns into this status. */
#define WALK_OK 0
#define WALK_SHORT 3
#define WALK_ERROR 4

static void walk_sigbus(int sig)
{
	(void)sig;
	_exit(WALK_SHORT);
}

/* Touches every page a reader can reach: LMDB reads each branch and leaf
 * page while walking the keys, and the walk reads the last byte of each
 * key and value (a cut file lacks a suffix, and a value's overflow pages
 * are contiguous, so a value whose last byte is there is whole). Any
 * other fault (SIGSEGV on pages that make no sense) ends the child too. */
static void walk_pages(mp_db_reader *r)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = walk_sigbus;
	sigemptyset(&sa.sa_mask);
	sigset_t bus;
	sigemptyset(&bus);
	sigaddset(&bus, SIGBUS);
	if (sigaction(SIGBUS, &sa, NULL) < 0 || sigprocmask(SIG_UNBLOCK, &bus, NULL) < 0)
		_exit(WALK_ERROR);
	MDB_cursor *c;
	if (mdb_cursor_open(r->txn, r->dbi, &c))
		_exit(WALK_ERROR);
	MDB_val k, v;
	volatile uint8_t sink = 0;
	int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == MDB_SUCCESS) {
		if (k.mv_size)
			sink ^= ((const uint8_t *)k.mv_data)[k.mv_size - 1];
		if (v.mv_size)
			sink ^= ((const uint8_t *)v.mv_data)[v.mv_size - 1];
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	(void)sink;
	_exit(rc == MDB_NOTFOUND ? WALK_OK : WALK_ERROR);
}

/* LMDB maps data.mdb and reads pages in place, so a file cut short makes
 * a reader die of SIGBUS when it reaches a missing page. A file that
 * holds every page up to the last one the last committed transaction
 * allocated is whole. A shorter file is not always damaged: pages
 * allocated and freed within one transaction are never written, and if
 * they were the last ones the file ends before them (mdb_env_copy clamps
 * its copy to the file size for this reason). Only such a short file is
 * walked, in a child, to see whether every reachable page is there. */
static int check_size(mp_db_reader *r, const char *file, mp_error *e)
{
	MDB_envinfo info;
	MDB_stat ms;
	mdb_filehandle_t fd;
	struct stat st;
	int rc;
	if ((rc = mdb_env_info(r->env, &info)) || (rc = mdb_env_stat(r->env, &ms)))
		return mp_seterr(e, "%s: reading the environment: %s", r->path, mdb_strerror(rc));
	if ((rc = mdb_env_get_fd(r->env, &fd)))
		return mp_seterr(e, "%s: mdb_env_get_fd: %s", r->path, mdb_strerror(rc));
	/* After the meta was read: the file only grows while a writer
	 * commits, so a later size is never smaller than what it needs. */
	if (fstat(fd, &st) < 0)
		return mp_seterr(e, "%s: %s", file, strerror(errno));
	uint64_t need = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
	uint64_t have = (uint64_t)st.st_size;
	if (have >= need)
		return 0;
	/* LMDB writes whole pages: a partial one is a cut, and its missing
	 * bytes would read as zeros rather than fault. */
	if (have % ms.ms_psize)
		goto short_file;
	pid_t pid = fork();
	if (pid < 0)
		return mp_seterr(e, "%s: fork: %s", r->path, strerror(errno));
	if (pid == 0)
		walk_pages(r);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return mp_seterr(e, "%s: waitpid: %s", r->path, strerror(errno));
	if (WIFEXITED(status) && WEXITSTATUS(status) == WALK_OK)
		return 0;
short_file:
	return mp_seterr(e, "%s: truncated (%llu bytes; the database needs %llu)", file,
			 (unsigned long long)have, (unsigned long long)need);
}

/* LMDB trusts the pages it reads: in a damaged data.mdb a page number or
 * a node offset can send it outside the file (SIGBUS) or the map
 * (SIGSEGV). Each LMDB read below runs with these signals caught, and a
 * fault ends it with an error instead of killing the program. The handler
 * acts only for a thread inside such a read; any other fault goes on to
 * the action there was before, and kills as it would have. */
/* volatile: the stores around a read must not move past it */
static __thread sigjmp_buf *volatile fault_jmp;
static struct sigaction fault_old[2];
static pthread_once_t fault_once = PTHREAD_ONCE_INIT;

static void on_fault(int sig)
{
	if (fault_jmp)
		siglongjmp(*fault_jmp, sig);
	/* not ours: the faulting access runs again under the old action */
	sigaction(sig, &fault_old[sig == SIGBUS], NULL);
}

static void fault_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_fault;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &fault_old[0]);
	sigaction(SIGBUS, &sa, &fault_old[1]);
}

#define DB_FAULT_BASE 100000 /* returned as DB_FAULT_BASE + the signal */
#define DB_ASSERT 1000       /* in place of a signal: an LMDB assertion */

/* LMDB checks some fields of the pages it reads with assertions, which
 * abort the program ("Assertion 'root > 1' failed in mdb_page_search()"
 * for a damaged root page number). Inside a guarded read the failure is
 * a damaged file like a fault, and its text goes into the message. */
static __thread char assert_text[100];

static void on_assert(MDB_env *env, const char *msg)
{
	(void)env;
	if (fault_jmp) {
		snprintf(assert_text, sizeof assert_text, "%s", msg);
		siglongjmp(*fault_jmp, DB_ASSERT);
	}
}

/* rc = call, with a fault in it turned into DB_FAULT_BASE + the signal. */
#define DB_GUARDED(rc, call)                                   \
	do {                                                   \
		sigjmp_buf jb_;                                \
		pthread_once(&fault_once, fault_install);      \
		int sig_ = sigsetjmp(jb_, 1);                  \
		if (sig_) {                                    \
			fault_jmp = NULL;                      \
			(rc) = DB_FAULT_BASE + sig_;           \
		} else {                                       \
			fault_jmp = &jb_;                      \
			(rc) = (call);                         \
			fault_jmp = NULL;                      \
		}                                              \
	} while (0)

/* Reads a byte of every page of v (the first and the last included), so
 * that a value whose size or page number is damaged faults here, guarded,
 * rather than in its reader. */
static int touch_value(const MDB_val *v)
{
	const volatile uint8_t *p = v->mv_data;
	uint8_t sink = 0;
	for (size_t i = 0; i < v->mv_size; i += 4096)
		sink ^= p[i];
	if (v->mv_size)
		sink ^= p[v->mv_size - 1];
	return sink & 0;
}

/* mdb_get (c NULL) or mdb_cursor_get (c, op), guarded, with the key and
 * the value touched. */
static int db_read(mp_db_reader *r, MDB_cursor *c, MDB_cursor_op op, MDB_val *k, MDB_val *v)
{
	int rc;
	DB_GUARDED(rc, c ? mdb_cursor_get(c, k, v, op) : mdb_get(r->txn, r->dbi, k, v));
	if (rc == MDB_SUCCESS)
		DB_GUARDED(rc, touch_value(k) | touch_value(v));
	return rc;
}

/* Errors that a finished DB, read-only, gives only when damaged: a page
 * of the wrong type, a page number past the last page, a tree deeper
 * than LMDB allows. */
static int is_damage(int rc)
{
	return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_CURSOR_FULL;
}

/* The message for an error of db_read. */
static const char *db_read_error(int rc, char *buf, size_t n)
{
	if (rc == DB_FAULT_BASE + DB_ASSERT)
		snprintf(buf, n, "damaged: LMDB: %s", assert_text);
	else if (rc > DB_FAULT_BASE)
		snprintf(buf, n, "damaged: a page leads outside the file (%s)",
			 strsignal(rc - DB_FAULT_BASE));
	else if (is_damage(rc))
		snprintf(buf, n, "damaged: %s", mdb_strerror(rc));
	else
		snprintf(buf, n, "%s", mdb_strerror(rc));
	return buf;
}

/* A file shorter than its meta page says; with a damaged last page
 * number LMDB cannot map it. */
static int too_short(const char *file, uint64_t have, uint64_t need, mp_error *e)
{
	return mp_seterr(e, "%s: truncated or damaged (%llu bytes; the meta page says the "
			 "database needs %llu)", file, (unsigned long long)have,
			 (unsigned long long)need);
}

/* LMDB takes its page size from the meta pages without checking it: it
 * finds the second meta page at that offset, and a damaged size of 0
 * kills the reader (SIGFPE in mdb_env_open), while a wrong one sends
 * LMDB to the wrong pages. The page size is in the free database's
 * md_pad field of each meta page (LMDB's own layout: a 16-byte page
 * header, then magic, version, address, map size, that field, and after
 * the two databases the last page number and the transaction number).
 * Both meta pages must give the same power of two that LMDB could have
 * written; a second page that is no meta page is left to LMDB. */
#define META_FLAGS_OFF 10
#define META_MAGIC_OFF 16
#define META_PSIZE_OFF 40
#define META_LAST_PG_OFF 136
#define META_TXNID_OFF 144
#define META_HEAD 152
#define LMDB_P_META 0x08
#define LMDB_MAGIC 0xBEEFC0DEu

static int read_meta_head(int fd, off_t off, uint8_t *h, int *is_meta)
{
	ssize_t n = pread(fd, h, META_HEAD, off);
	if (n < 0)
		return -1;
	*is_meta = n == META_HEAD && (mp_get_u16(h + META_FLAGS_OFF) & LMDB_P_META) &&
		   mp_get_u32(h + META_MAGIC_OFF) == LMDB_MAGIC;
	return 0;
}

/* Checks the page size; *need is the size the file must have by the meta
 * page LMDB uses (the one of the later transaction), 0 if unknown. */
static int check_meta_pages(const char *file, uint64_t *need, mp_error *e)
{
	*need = 0;
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mp_seterr(e, "%s: %s", file, strerror(errno));
	uint8_t h[META_HEAD], h1[META_HEAD];
	int is_meta, rc = 0;
	if (read_meta_head(fd, 0, h, &is_meta) < 0) {
		rc = mp_seterr(e, "%s: %s", file, strerror(errno));
		goto out;
	}
	if (!is_meta) /* LMDB says what it is not */
		goto out;
	uint32_t psize = mp_get_u32(h + META_PSIZE_OFF);
	if (psize < 512 || psize > 65536 || (psize & (psize - 1))) {
		rc = mp_seterr(e, "%s: damaged: the first meta page gives a page size of %lu",
			       file, (unsigned long)psize);
		goto out;
	}
	if (read_meta_head(fd, psize, h1, &is_meta) < 0) {
		rc = mp_seterr(e, "%s: %s", file, strerror(errno));
		goto out;
	}
	if (is_meta && mp_get_u32(h1 + META_PSIZE_OFF) != psize) {
		rc = mp_seterr(e, "%s: damaged: the meta pages give page sizes %lu and %lu", file,
			       (unsigned long)psize, (unsigned long)mp_get_u32(h1 + META_PSIZE_OFF));
		goto out;
	}
	const uint8_t *live = h;
	if (is_meta && mp_get_u64(h1 + META_TXNID_OFF) > mp_get_u64(h + META_TXNID_OFF))
		live = h1;
	uint64_t last = mp_get_u64(live + META_LAST_PG_OFF);
	*need = last >= UINT64_MAX / psize ? UINT64_MAX : (last + 1) * psize;
out:
	close(fd);
	return rc;
}

mp_db_reader *mp_db_reader_open(const char *path, mp_error *e)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		mp_seterr(e, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (!S_ISDIR(st.st_mode) || !mp_db_is_db(path)) {
		mp_seterr(e, "%s: not a dataset DB (no data.mdb)", path);
		return NULL;
	}
	char file[PATH_MAX];
	if (snprintf(file, sizeof file, "%s/data.mdb", path) >= (int)sizeof file) {
		mp_seterr(e, "%s: path too long", path);
		return NULL;
	}
	if (stat(file, &st) < 0) {
		mp_seterr(e, "%s: %s", file, strerror(errno));
		return NULL;
	}
	/* LMDB says "Bad file descriptor" or "not an LMDB file" for these. */
	if (st.st_size == 0) {
		mp_seterr(e, "%s: empty file (not an LMDB database)", file);
		return NULL;
	}
	uint64_t need;
	if (check_meta_pages(file, &need, e) < 0)
		return NULL;
	mp_db_reader *r = calloc(1, sizeof *r);
	if (!r) {
		mp_seterr(e, "out of memory");
		return NULL;
	}
	snprintf(r->path, sizeof r->path, "%s", path);
	int rc;
	const char *what = "mdb_env_create";
	if ((rc = mdb_env_create(&r->env)) || (rc = mdb_env_set_assert(r->env, on_assert)))
		goto fail;
	/* A finished DB never changes, so readers need no lock file and work
	 * on read-only media. */
	what = "mdb_env_open";
	rc = mdb_env_open(r->env, path, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0);
	/* LMDB maps the writer's map size (a GiB or more for any DB), which
	 * an address-space limit (ulimit -v) may not allow. A map as large as
	 * the file is all a reader needs; but the larger map stays the first
	 * choice, since a damaged page's pointer past the file then lands in
	 * it and faults (reported below) rather than in other memory. LMDB
	 * rounds the size up to the pages the DB says it has. */
	if (rc == ENOMEM) {
		mdb_env_close(r->env);
		r->env = NULL;
		what = "mdb_env_create";
		if ((rc = mdb_env_create(&r->env)) ||
		    (rc = mdb_env_set_assert(r->env, on_assert)))
			goto fail;
		what = "mdb_env_set_mapsize";
		if ((rc = mdb_env_set_mapsize(r->env, (size_t)st.st_size)))
			goto fail;
		what = "mdb_env_open";
		rc = mdb_env_open(r->env, path, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0);
	}
	if (rc) {
		/* A short read of the meta pages is MDB_INVALID too. */
		if (rc == MDB_INVALID)
			mp_seterr(e, "%s: not an LMDB file, or truncated (%lld bytes)", file,
				  (long long)st.st_size);
		else if (rc == ENOMEM && need > (uint64_t)st.st_size)
			too_short(file, (uint64_t)st.st_size, need, e);
		else
			mp_seterr(e, "%s: mdb_env_open: %s", file, mdb_strerror(rc));
		mp_db_reader_close(r);
		return NULL;
	}
	what = "mdb_txn_begin";
	DB_GUARDED(rc, mdb_txn_begin(r->env, NULL, MDB_RDONLY, &r->txn));
	/* a last page number past what the map can hold */
	if (rc == MDB_MAP_RESIZED && need > (uint64_t)st.st_size) {
		too_short(file, (uint64_t)st.st_size, need, e);
		mp_db_reader_close(r);
		return NULL;
	}
	if (rc)
		goto fail;
	what = "mdb_dbi_open";
	DB_GUARDED(rc, mdb_dbi_open(r->txn, NULL, 0, &r->dbi));
	if (rc)
		goto fail;
	if (check_size(r, file, e) < 0) {
		mp_db_reader_close(r);
		return NULL;
	}
	snprintf(r->file, sizeof r->file, "%s", file);
	return r;
fail:
	if (rc > DB_FAULT_BASE || is_damage(rc)) {
		char why[128];
		mp_seterr(e, "%s: %s: %s", file, what, db_read_error(rc, why, sizeof why));
	} else {
		mp_seterr(e, "%s: %s: %s", path, what, mdb_strerror(rc));
	}
	mp_db_reader_close(r);
	return NULL;
}

int mp_db_reader_meta(mp_db_reader *r, const char **json, size_t *len,
		      mp_error *e)
{
	MDB_val k = {4, "meta"}, v;
	char why[128];
	int rc = db_read(r, NULL, 0, &k, &v);
	if (rc == MDB_NOTFOUND)
		return mp_seterr(e, "%s: no meta record (not a finished dataset DB)", r->path);
	if (rc)
		return mp_seterr(e, "%s: reading meta: %s", r->file,
				 db_read_error(rc, why, sizeof why));
	*json = v.mv_data;
	*len = v.mv_size;
	return 0;
}

int mp_db_reader_get(mp_db_reader *r, uint64_t index, const uint8_t **buf,
		     size_t *len, mp_error *e)
{
	char key[32];
	batch_key(key, sizeof key, index);
	MDB_val k = {strlen(key), key}, v;
	char why[128];
	int rc = db_read(r, NULL, 0, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return mp_seterr(e, "%s: reading %s: %s", r->file, key,
				 db_read_error(rc, why, sizeof why));
	*buf = v.mv_data;
	*len = v.mv_size;
	return 1;
}

int mp_db_reader_count_batches(mp_db_reader *r, uint64_t *count, mp_error *e)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(r->txn, r->dbi, &c);
	if (rc)
		return mp_seterr(e, "%s: mdb_cursor_open: %s", r->path, mdb_strerror(rc));
	uint64_t n = 0;
	MDB_val k = {3, "mb/"}, v;
	char why[128];
	rc = db_read(r, c, MDB_SET_RANGE, &k, &v);
	while (rc == MDB_SUCCESS && k.mv_size >= 3 && !memcmp(k.mv_data, "mb/", 3)) {
		n++;
		rc = db_read(r, c, MDB_NEXT, &k, &v);
	}
	mdb_cursor_close(c);
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return mp_seterr(e, "%s: walking keys: %s", r->file,
				 db_read_error(rc, why, sizeof why));
	*count = n;
	return 0;
}

/* The index of a key that is a macrobatch's, exactly as batch_key
 * writes it; -1 for any other key. */
static int batch_index(const MDB_val *k, uint64_t *index)
{
	const char *p = k->mv_data;
	size_t n = k->mv_size;
	if (n < 3 + 8 || n > 3 + 20 || memcmp(p, "mb/", 3))
		return -1;
	uint64_t v = 0;
	for (size_t i = 3; i < n; i++) {
		if (p[i] < '0' || p[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	char key[32];
	batch_key(key, sizeof key, v);
	if (strlen(key) != n || memcmp(key, p, n))
		return -1;
	*index = v;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int mp_db_reader_batch_indices(mp_db_reader *r, uint64_t limit, uint64_t **out,
			       size_t *count, mp_error *e)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(r->txn, r->dbi, &c);
	if (rc)
		return mp_seterr(e, "%s: mdb_cursor_open: %s", r->path, mdb_strerror(rc));
	uint64_t *v = NULL;
	size_t n = 0, cap = 0;
	MDB_val k = {3, "mb/"}, d;
	char why[128];
	/* the keys only: the values are read, guarded, when they are used */
	DB_GUARDED(rc, mdb_cursor_get(c, &k, &d, MDB_SET_RANGE));
	while (rc == MDB_SUCCESS && k.mv_size >= 3 && !memcmp(k.mv_data, "mb/", 3)) {
		uint64_t index;
		DB_GUARDED(rc, touch_value(&k));
		if (rc)
			break;
		if (batch_index(&k, &index) == 0 && index < limit) {
			if (n == cap) {
				size_t ncap = cap ? 2 * cap : 64;
				uint64_t *nv = realloc(v, ncap * sizeof *v);
				if (!nv) {
					mdb_cursor_close(c);
					free(v);
					return mp_seterr(e, "out of memory");
				}
				v = nv;
				cap = ncap;
			}
			v[n++] = index;
		}
		DB_GUARDED(rc, mdb_cursor_get(c, &k, &d, MDB_NEXT));
	}
	mdb_cursor_close(c);
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
		free(v);
		return mp_seterr(e, "%s: walking keys: %s", r->file,
				 db_read_error(rc, why, sizeof why));
	}
	/* the keys sort by index only up to 99999999 (8 digits) */
	if (n > 1)
		qsort(v, n, sizeof *v, cmp_u64);
	*out = v;
	*count = n;
	return 0;
}

void mp_db_reader_close(mp_db_reader *r)
{
	if (!r)
		return;
	if (r->txn)
		mdb_txn_abort(r->txn);
	if (r->env)
		mdb_env_close(r->env);
	free(r);
}
