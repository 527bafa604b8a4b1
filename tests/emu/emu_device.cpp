/* The CUDA module as built (kernels/cuda/'s files, backend_cuda.cu, conv.cu
 * and device.cu included), on a device emulated on the host: the CUDA
 * runtime, cuBLAS's SGEMM and cuDNN's legacy convolutions are stood in for
 * here, with the rules a device holds the backend to, so that breaking
 * one fails here as it would there:
 *
 * - Streams run their work later: a launch, an asynchronous copy, a cuDNN
 *   or cuBLAS call is queued on its stream and runs, in order, only when
 *   something waits for it (cudaStreamSynchronize, an event, cudaFree,
 *   a synchronous copy). A result read before its wait is the memory's old
 *   contents; page-locked memory comes filled with NaN, as device memory
 *   does, so such a read shows. Copies between device memory and pageable
 *   host memory behave as CUDA documents: to the device, the host's bytes
 *   are taken at the call; to the host, the call waits for the stream.
 *   cudaStreamWaitEvent orders two streams as recorded. Work of two
 *   streams that no event orders runs in either order: by default a wait
 *   runs only the stream waited for (what the other queued runs later);
 *   MP_EMU_STREAMS chooses other schedules (others-first, eager, random).
 * - A stream capture (cudaStreamBeginCapture) records instead of queuing;
 *   the instantiated graph replays the records, with the arguments of the
 *   recorded calls. In thread-local mode a call of the capturing thread
 *   that would synchronize or allocate (cudaMalloc, cudaFree,
 *   cudaMallocHost, a wait, a synchronous copy, cudnnFind*), a use of the
 *   legacy stream, and a copy from or to pageable host memory fail and
 *   invalidate the capture, as on a device, so cudaStreamEndCapture fails.
 *   Held stricter than a device may hold them: cudaMallocHost and
 *   cudaEventRecord in a capture (the backend uses neither there).
 * - Device pointers that copies, cuDNN and cuBLAS are given must lie in
 *   memory of cudaMalloc with room for what they touch; cudaFree of
 *   anything else fails.
 * - cuDNN: descriptors hold what they are given; the algorithm queries
 *   offer, per direction, a nondeterministic algorithm first and a
 *   deterministic one after it (backward) with a workspace that the call
 *   must be given, and none in bf16 for the filter gradient of 3-channel
 *   inputs (the stem's); the convolutions compute, in double, on the operands'
 *   types and layouts (float or bf16, NCHW or NHWC), and round the result
 *   to the output's type. A nondeterministic algorithm's results differ
 *   in the last place from call to call, so that one taken where the
 *   backend promises the same bits shows. The graph API (MP_CUDNN_API=
 *   graph) has its descriptors, heuristics, plans and variant packs, for
 *   graphs of one convolution (see its section below).
 *
 * MP_EMU_GRAPHS=1 prints, for every graph instantiated, its nodes by kind
 * (kernels, cuDNN and cuBLAS calls, copies): what a launch of it would
 * run on a device; MP_EMU_GRAPHS=kernels also counts each kernel's.
 *
 * Linked into test_nhwc_emu and test_cuda_ops_device (emu_device.h), and
 * built as a module (tests/emu/libmp-cuda-emu.so) that the programs load
 * through MP_CUDA_MODULE (tests/cli/emucuda.bats). It says nothing of
 * speed, of cuDNN's own algorithms or of true concurrency: the work of
 * every stream runs on the calling thread, one call at a time (a lock). */
#include "cuda_emu.h"

/* cuda_runtime.h's C++ form, which it declares for nvcc only */
template <class T> static cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, T *entry)
{
	return cudaFuncGetAttributes(attr, (const void *)entry);
}

#include "../../kernels/cuda/convert.cu"
#include "../../kernels/cuda/nhwc.cu"
#include "../../kernels/cuda/conv_bn.cu"
#include "../../kernels/cuda/bn.cu"
#include "../../kernels/cuda/layers.cu"
#include "../../kernels/cuda/augment.cu"
#include "../../kernels/cuda/conv.cu"
#include "../../kernels/cuda/conv_graph.cu"
#include "../../kernels/cuda/backend_cuda.cu"
#include "../../kernels/cuda/device.cu"

#include "emu_device.h"

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

typedef std::function<void()> work_fn;

/* ---- streams, events, graphs ----------------------------------------------------------- */

struct CUgraph_st {
	std::vector<work_fn> nodes;
	std::vector<const char *> kinds; /* each node's: "kernel", "cuDNN", "copy", ... */
};
struct CUgraphExec_st {
	std::shared_ptr<std::vector<work_fn>> nodes;
};
struct CUstream_st {
	std::deque<work_fn> queue;
	unsigned long submitted = 0, done = 0;
	CUgraph_st *capture = nullptr; /* recording into it */
	bool invalid = false;	       /* its capture was broken */
	unsigned long made = 0;	       /* its place among the streams made, 0 the legacy one */
};
struct CUevent_st {
	CUstream_st *stream = nullptr;
	unsigned long seq = 0; /* done when stream->done reaches it */
	bool timing = true;
	double ms = 0; /* host time when its place in the stream ran */
};

namespace {

std::recursive_mutex big_lock;
#define LOCKED std::lock_guard<std::recursive_mutex> locked_(big_lock)

CUstream_st legacy;		  /* stream 0 */
std::set<CUstream_st *> streams;  /* those made, besides the legacy one */
CUstream_st *capturing = nullptr; /* the stream being captured, if any */
pthread_t capture_thread;
thread_local cudaError_t last_error = cudaSuccess;
std::map<uintptr_t, size_t> device_mem, pinned_mem; /* start -> bytes */

CUstream_st *stream_of(cudaStream_t s)
{
	return s ? s : &legacy;
}

cudaError_t fail(cudaError_t e)
{
	last_error = e;
	return e;
}

/* MP_EMU_FAIL=NAME[:K]: the K-th call (the first without K) of the CUDA
 * runtime, cuDNN or cuBLAS function NAME (cuBLAS's without its "_v2"),
 * or the K-th launch of the kernel NAME (as MP_LAUNCH names it, template
 * arguments and all), fails: the call returns an error and does nothing;
 * the kernel does not run, and the launch's error is an unspecified launch
 * failure. With ":sticky" after it, every call after that one fails too,
 * as after a fault that leaves a device's context unusable.
 * MP_EMU_CALLS=FILE writes each name's count of calls into FILE
 * at exit, one "NAME<tab>COUNT" a line: what a sweep of MP_EMU_FAIL goes
 * through (tests/cli/emufail.bats). Calls that only ask (cudaGetLastError
 * and its kind) are neither counted nor failed. */
struct call_counts {
	std::mutex m;
	std::map<std::string, unsigned long> n;
	std::string fail_name;
	unsigned long fail_at = 0; /* 0: none */
	bool sticky = false;	   /* every call after the failure fails too */
	bool failed = false;
};

void write_call_counts(void);

/* Made at the first call and never destroyed: calls may come from other
 * objects' destructors at exit. */
call_counts &calls()
{
	static call_counts *c = [] {
		call_counts *made = new call_counts;
		const char *v = getenv("MP_EMU_FAIL");
		if (v && *v) {
			std::string spec(v);
			const std::string suffix = ":sticky";
			if (spec.size() > suffix.size() &&
			    !spec.compare(spec.size() - suffix.size(), suffix.size(), suffix)) {
				made->sticky = true;
				spec.resize(spec.size() - suffix.size());
			}
			const size_t colon = spec.rfind(':');
			char *end = nullptr;
			made->fail_name = spec.substr(0, colon);
			made->fail_at =
				colon != std::string::npos ? strtoul(spec.c_str() + colon + 1, &end, 10) : 1;
			if (made->fail_name.empty() ||
			    (colon != std::string::npos && (*end || !made->fail_at))) {
				fprintf(stderr, "emu_device: MP_EMU_FAIL=%s: not NAME, NAME:K (K from 1), "
						"or either with :sticky\n",
					v);
				exit(2);
			}
		}
		if (getenv("MP_EMU_CALLS"))
			atexit(write_call_counts);
		return made;
	}();
	return *c;
}

void write_call_counts(void)
{
	const char *file = getenv("MP_EMU_CALLS");
	if (!file || !*file)
		return;
	FILE *f = fopen(file, "w");
	if (!f) {
		fprintf(stderr, "emu_device: MP_EMU_CALLS=%s: %s\n", file, strerror(errno));
		return;
	}
	std::lock_guard<std::mutex> locked(calls().m);
	for (const auto &c : calls().n)
		fprintf(f, "%s\t%lu\n", c.first.c_str(), c.second);
	if (fclose(f))
		fprintf(stderr, "emu_device: MP_EMU_CALLS=%s: %s\n", file, strerror(errno));
}

/* Counts a call of fn; whether MP_EMU_FAIL fails this one. */
bool injected(const char *fn)
{
	std::string name(fn);
	if (name.size() > 3 && !name.compare(name.size() - 3, 3, "_v2"))
		name.resize(name.size() - 3);
	call_counts &c = calls();
	std::lock_guard<std::mutex> locked(c.m);
	const unsigned long k = ++c.n[name];
	if (c.failed && c.sticky)
		return true;
	if (c.fail_at && k == c.fail_at && name == c.fail_name)
		return c.failed = true;
	return false;
}
#define INJECT(error)                                                             \
	do {                                                                      \
		if (injected(__func__))                                           \
			return (error);                                           \
	} while (0)

/* Whether [p, p + n) lies in one allocation of the table. */
bool within(const std::map<uintptr_t, size_t> &table, const void *p, size_t n)
{
	const uintptr_t a = (uintptr_t)p;
	auto it = table.upper_bound(a);
	if (it == table.begin())
		return false;
	--it;
	return a >= it->first && a - it->first + n <= it->second;
}

bool is_device(const void *p, size_t n)
{
	return p && within(device_mem, p, n ? n : 1);
}

bool is_pinned(const void *p, size_t n)
{
	return p && within(pinned_mem, p, n ? n : 1);
}

/* A capture by this thread forbids calls that synchronize or allocate:
 * the call fails and the capture with it. */
bool capture_forbids()
{
	if (!capturing || !pthread_equal(capture_thread, pthread_self()))
		return false;
	capturing->invalid = true;
	return true;
}

int running_work = 0; /* depth of queued work running now: no progress inside it */

void run_until(CUstream_st *s, unsigned long seq)
{
	while (s->done < seq && !s->queue.empty()) {
		work_fn w = std::move(s->queue.front());
		s->queue.pop_front();
		running_work++;
		w();
		running_work--;
		s->done++;
	}
}

void run_all(CUstream_st *s)
{
	run_until(s, s->submitted);
}

void run_every_stream()
{
	run_all(&legacy);
	for (CUstream_st *s : streams)
		run_all(s);
}

/* MP_EMU_STREAMS: when queued work runs, within what events order. A device
 * runs a stream's work at any time after its call and before the wait that
 * needs it, and two streams' work that no event orders in either order or
 * together; each mode holds the backend to one end of that, or to chance:
 * - own (the default): only at a wait, and only the stream waited for (what
 *   another stream queued runs later): a read before its wait shows;
 * - others-first: a wait first runs every other stream's queued work (a
 *   copy on the second stream before the step queued earlier on the first);
 * - eager: at its call, as an infinitely fast device would: a page-locked
 *   input written after the copy that reads it was queued shows, as does
 *   a page-locked buffer that a copy writes while the host still reads it;
 * - random:SEED: after each call that queues work, and at each wait, a
 *   chance-sized part of each stream's queued work, in an order the seed
 *   draws: an interleaving of the streams that no other mode gives.
 * Dependencies hold in every mode: a stream's event wait runs the other
 * stream up to its event first. */
enum stream_mode { STREAMS_OWN, STREAMS_OTHERS_FIRST, STREAMS_EAGER, STREAMS_RANDOM };
uint64_t streams_rng;

stream_mode streams_mode()
{
	static int mode = -1;
	if (mode >= 0)
		return (stream_mode)mode;
	const char *v = getenv("MP_EMU_STREAMS");
	char *end = nullptr;
	if (!v || !*v || !strcmp(v, "own"))
		mode = STREAMS_OWN;
	else if (!strcmp(v, "others-first"))
		mode = STREAMS_OTHERS_FIRST;
	else if (!strcmp(v, "eager"))
		mode = STREAMS_EAGER;
	else if (!strncmp(v, "random:", 7) && v[7] >= '0' && v[7] <= '9' &&
		 ((void)(errno = 0), streams_rng = strtoull(v + 7, &end, 10), !*end && !errno))
		mode = STREAMS_RANDOM;
	else {
		fprintf(stderr, "emu_device: MP_EMU_STREAMS=%s: not own, others-first, eager or "
				"random:SEED (SEED a number)\n", v);
		exit(2);
	}
	return (stream_mode)mode;
}

/* splitmix64: a draw in [0, n] */
unsigned long draw_upto(unsigned long n)
{
	uint64_t z = (streams_rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return (unsigned long)(z % ((uint64_t)n + 1));
}

/* random: a drawn part of each stream's queued work, the streams in a
 * drawn order; half the time none */
void random_progress()
{
	std::vector<CUstream_st *> all(1, &legacy);
	all.insert(all.end(), streams.begin(), streams.end());
	/* from the order they were made, not their addresses: one seed, one
	 * schedule (where one thread makes the calls) */
	std::sort(all.begin(), all.end(),
		  [](const CUstream_st *a, const CUstream_st *b) { return a->made < b->made; });
	for (size_t i = all.size(); i > 1; i--)
		std::swap(all[i - 1], all[draw_upto(i - 1)]);
	for (CUstream_st *s : all) {
		if (s->queue.empty() || !draw_upto(1))
			continue;
		run_until(s, s->done + draw_upto(s->queue.size()));
	}
}

/* The host waits for stream s up to its seq-th work. */
void wait_for(CUstream_st *s, unsigned long seq)
{
	const stream_mode mode = streams_mode();
	if (mode == STREAMS_RANDOM && !running_work)
		random_progress();
	if (mode == STREAMS_OTHERS_FIRST) {
		if (s != &legacy)
			run_all(&legacy);
		for (CUstream_st *o : streams)
			if (o != s)
				run_all(o);
	}
	run_until(s, seq);
}

void wait_all(CUstream_st *s)
{
	wait_for(s, s->submitted);
}

/* Work for stream s: queued, or recorded when s is captured (as a node
 * of that kind). */
cudaError_t submit(cudaStream_t st, work_fn w, const char *kind)
{
	CUstream_st *s = stream_of(st);
	if (s == &legacy && capture_forbids())
		return fail(cudaErrorStreamCaptureImplicit);
	if (s->capture) {
		s->capture->nodes.push_back(std::move(w));
		s->capture->kinds.push_back(kind);
		return cudaSuccess;
	}
	s->queue.push_back(std::move(w));
	s->submitted++;
	if (!running_work) {
		const stream_mode mode = streams_mode();
		if (mode == STREAMS_EAGER)
			run_all(s);
		else if (mode == STREAMS_RANDOM)
			random_progress();
	}
	return cudaSuccess;
}

void submit_launch(cudaStream_t st, work_fn w, const char *name)
{
	LOCKED;
	if (injected(name)) {
		(void)fail(cudaErrorLaunchFailure);
		return;
	}
	(void)submit(st, std::move(w), name); /* its error is the launch's (cudaGetLastError) */
}

double now_ms()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* the kernels' launches go to their streams from the start */
struct install_submit {
	install_submit()
	{
		mp_emu_submit = submit_launch;
	}
} install_submit_;

} // namespace

extern "C" {

cudaError_t mp_emu_sync_error = cudaSuccess;

cudaError_t cudaGetLastError(void)
{
	const cudaError_t e = last_error;
	last_error = cudaSuccess;
	return e;
}

cudaError_t cudaPeekAtLastError(void)
{
	return last_error;
}

const char *cudaGetErrorName(cudaError_t e)
{
	switch (e) {
	case cudaSuccess: return "cudaSuccess";
	case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
	case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
	case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
	case cudaErrorIllegalState: return "cudaErrorIllegalState";
	case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
	case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
	case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
	case cudaErrorStreamCaptureIsolation: return "cudaErrorStreamCaptureIsolation";
	case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
	case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
	default: return "cudaError";
	}
}

const char *cudaGetErrorString(cudaError_t e)
{
	switch (e) {
	case cudaSuccess: return "no error";
	case cudaErrorInvalidValue: return "invalid argument";
	case cudaErrorMemoryAllocation: return "out of memory";
	case cudaErrorStreamCaptureUnsupported:
		return "operation not permitted when stream is capturing";
	case cudaErrorStreamCaptureInvalidated:
		return "operation failed due to a previous error during capture";
	case cudaErrorStreamCaptureImplicit:
		return "operation would make the legacy stream depend on a capturing blocking "
		       "stream";
	case cudaErrorLaunchFailure: return "unspecified launch failure";
	default: return "an error of the emulated device";
	}
}

/* ---- the device ---- */

/* MP_EMU_DEVICES=N (1 to 8, 1 by default): that many devices, alike (the
 * work of each runs as the first's): for the choice of one. */
static int device_count()
{
	static const int n = [] {
		const char *v = getenv("MP_EMU_DEVICES");
		if (!v || !*v)
			return 1;
		char *end;
		const long k = strtol(v, &end, 10);
		if (*end || k < 1 || k > 8) {
			fprintf(stderr, "emu_device: MP_EMU_DEVICES=%s: not 1 to 8\n", v);
			exit(2);
		}
		return (int)k;
	}();
	return n;
}

cudaError_t cudaGetDeviceCount(int *count)
{
	INJECT(fail(cudaErrorLaunchFailure));
	*count = device_count();
	return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
	INJECT(fail(cudaErrorLaunchFailure));
	return device >= 0 && device < device_count() ? cudaSuccess : fail(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
	INJECT(fail(cudaErrorLaunchFailure));
	if (device < 0 || device >= device_count())
		return fail(cudaErrorInvalidDevice);
	memset(prop, 0, sizeof *prop);
	snprintf(prop->name, sizeof prop->name, "emulated on the host by tests/emu");
	prop->major = 9;
	prop->minor = 0;
	prop->totalGlobalMem = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
	return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, const void *func)
{
	INJECT(fail(cudaErrorLaunchFailure));
	(void)func;
	memset(attr, 0, sizeof *attr);
	return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
	INJECT(fail(cudaErrorLaunchFailure));
	*v = CUDART_VERSION;
	return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
	INJECT(fail(cudaErrorLaunchFailure));
	*v = CUDART_VERSION;
	return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	run_every_stream();
	return cudaSuccess;
}

/* ---- memory ---- */

} // extern "C"

namespace {

/* Memory of the table's kind (device or page-locked), filled with NaN as
 * cudaMalloc leaves device memory with whatever was there: stale reads
 * show. */
cudaError_t alloc_in(std::map<uintptr_t, size_t> &table, void **p, size_t size)
{
	LOCKED;
	*p = NULL;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	void *m = mp_emu_device_alloc(size);
	if (!m)
		return fail(cudaErrorMemoryAllocation);
	table[(uintptr_t)m] = size ? size : 1;
	*p = m;
	return cudaSuccess;
}

/* Freeing waits for the device: work queued may still use the memory. */
cudaError_t free_in(std::map<uintptr_t, size_t> &table, void *p)
{
	LOCKED;
	if (!p)
		return cudaSuccess;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	auto it = table.find((uintptr_t)p);
	if (it == table.end())
		return fail(cudaErrorInvalidValue);
	run_every_stream();
	table.erase(it);
	free(p);
	return cudaSuccess;
}

} // namespace

extern "C" {

cudaError_t cudaMalloc(void **p, size_t size)
{
	INJECT(fail(cudaErrorMemoryAllocation));
	return alloc_in(device_mem, p, size);
}

cudaError_t cudaFree(void *p)
{
	INJECT(fail(cudaErrorLaunchFailure));
	return free_in(device_mem, p);
}

cudaError_t cudaMallocHost(void **p, size_t size)
{
	INJECT(fail(cudaErrorMemoryAllocation));
	return alloc_in(pinned_mem, p, size);
}

cudaError_t cudaFreeHost(void *p)
{
	INJECT(fail(cudaErrorLaunchFailure));
	return free_in(pinned_mem, p);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
			    cudaStream_t st)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	if (kind == cudaMemcpyDefault)
		kind = is_device(dst, n) ? (is_device(src, n) ? cudaMemcpyDeviceToDevice
							      : cudaMemcpyHostToDevice)
					 : (is_device(src, n) ? cudaMemcpyDeviceToHost
							      : cudaMemcpyHostToHost);
	const bool to_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
	const bool from_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
	if (n == 0)
		return cudaSuccess;
	if ((to_device && !is_device(dst, n)) || (from_device && !is_device(src, n)) ||
	    (!to_device && !dst) || (!from_device && !src))
		return fail(cudaErrorInvalidValue);
	CUstream_st *s = stream_of(st);
	const void *host = kind == cudaMemcpyHostToDevice   ? src
			   : kind == cudaMemcpyDeviceToHost ? dst
							    : NULL;
	if (s->capture && host && !is_pinned(host, n)) {
		s->invalid = true; /* a graph copies only page-locked host memory */
		return fail(cudaErrorStreamCaptureUnsupported);
	}
	if (kind == cudaMemcpyHostToHost) {
		if (capture_forbids())
			return fail(cudaErrorStreamCaptureUnsupported);
		memcpy(dst, src, n);
		return cudaSuccess;
	}
	if (host && !is_pinned(host, n)) {
		if (kind == cudaMemcpyHostToDevice) {
			/* the host's bytes are staged now; the device gets them in turn */
			auto staged = std::make_shared<std::vector<unsigned char>>(
				(const unsigned char *)src, (const unsigned char *)src + n);
			return submit(st, [dst, staged]() {
				memcpy(dst, staged->data(), staged->size());
			}, "copy");
		}
		/* to pageable memory the call returns when the copy is done */
		if (capture_forbids())
			return fail(cudaErrorStreamCaptureUnsupported);
		wait_all(s);
		memcpy(dst, src, n);
		mp_emu_digest_add(dst, n);
		return cudaSuccess;
	}
	return submit(st, [dst, src, n, kind]() {
		memcpy(dst, src, n);
		if (kind == cudaMemcpyDeviceToHost)
			mp_emu_digest_add(dst, n);
	}, "copy");
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	const cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, 0);
	run_every_stream();
	return e;
}

/* ---- streams ---- */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned flags)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	(void)flags;
	static unsigned long made;
	CUstream_st *s = new CUstream_st;
	s->made = ++made;
	streams.insert(s);
	*st = s;
	return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *st)
{
	INJECT(fail(cudaErrorLaunchFailure));
	return cudaStreamCreateWithFlags(st, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t st)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	if (!st || !streams.count(st))
		return fail(cudaErrorInvalidResourceHandle);
	run_all(st); /* its work completes first */
	if (capturing == st)
		capturing = nullptr;
	delete st->capture;
	streams.erase(st);
	delete st;
	return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t st)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	CUstream_st *s = stream_of(st);
	if (s->capture || (s == &legacy && capturing)) {
		if (capturing)
			capturing->invalid = true;
		return fail(cudaErrorStreamCaptureUnsupported);
	}
	wait_all(s);
	const cudaError_t e = mp_emu_sync_error;
	mp_emu_sync_error = cudaSuccess;
	return e == cudaSuccess ? e : fail(e);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode mode)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	(void)mode; /* every mode is held as thread-local, the backend's */
	if (!st || !streams.count(st))
		return fail(cudaErrorStreamCaptureUnsupported); /* the legacy stream */
	if (capturing)
		return fail(cudaErrorIllegalState);
	st->capture = new CUgraph_st;
	st->invalid = false;
	capturing = st;
	capture_thread = pthread_self();
	return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *graph)
{
	LOCKED;
	*graph = NULL;
	if (!st || st->capture == nullptr)
		return fail(cudaErrorIllegalState);
	CUgraph_st *g = st->capture;
	st->capture = nullptr;
	capturing = nullptr;
	/* a failure (MP_EMU_FAIL) ends the capture too, as any does on a device */
	if (injected(__func__) || st->invalid) {
		st->invalid = false;
		delete g;
		return fail(cudaErrorStreamCaptureInvalidated);
	}
	*graph = g;
	return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
				 unsigned long long flags)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	(void)flags;
	if (!graph)
		return fail(cudaErrorInvalidValue);
	CUgraphExec_st *x = new CUgraphExec_st;
	x->nodes = std::make_shared<std::vector<work_fn>>(graph->nodes);
	*exec = x;
	if (getenv("MP_EMU_GRAPHS")) {
		/* what a launch of it runs, by kind: the node count a device's
		 * graph would have */
		static const std::set<std::string> calls = {"copy", "graph", "event",
							    "event wait", "cuBLAS", "cuDNN"};
		std::map<std::string, int> count, kernels;
		for (const char *k : graph->kinds) {
			const bool call = calls.count(k);
			count[call ? k : "kernel"]++;
			if (!call)
				kernels[k]++;
		}
		fprintf(stderr, "emu_device: graph of %zu nodes:", graph->kinds.size());
		for (const auto &c : count)
			fprintf(stderr, " %d %s", c.second, c.first.c_str());
		fprintf(stderr, "\n");
		if (!strcmp(getenv("MP_EMU_GRAPHS"), "kernels"))
			for (const auto &c : kernels)
				fprintf(stderr, "emu_device:   %5d %s\n", c.second, c.first.c_str());
	}
	return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t st)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	if (!exec)
		return fail(cudaErrorInvalidValue);
	auto nodes = exec->nodes; /* destroying the graph leaves a launched one to finish */
	return submit(st, [nodes]() {
		for (work_fn &w : *nodes)
			w();
	}, "graph");
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	delete graph;
	return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	delete exec;
	return cudaSuccess;
}

/* ---- events ---- */

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned flags)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	CUevent_st *e = new CUevent_st;
	e->timing = !(flags & cudaEventDisableTiming);
	*ev = e;
	return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *ev)
{
	INJECT(fail(cudaErrorLaunchFailure));
	return cudaEventCreateWithFlags(ev, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	delete ev;
	return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	CUstream_st *s = stream_of(st);
	if (s->capture) {
		s->invalid = true; /* no event nodes here: the backend records none */
		return fail(cudaErrorStreamCaptureUnsupported);
	}
	const cudaError_t e = submit(st, [ev]() { ev->ms = now_ms(); }, "event");
	if (e != cudaSuccess)
		return e;
	ev->stream = s;
	ev->seq = s->submitted;
	return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	if (ev->stream)
		wait_for(ev->stream, ev->seq);
	return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	if (!a->timing || !b->timing)
		return fail(cudaErrorInvalidResourceHandle);
	*ms = (float)(b->ms - a->ms);
	return cudaSuccess;
}

/* st's later work waits for ev's stream up to ev's place */
cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t ev, unsigned flags)
{
	INJECT(fail(cudaErrorLaunchFailure));
	LOCKED;
	(void)flags;
	CUstream_st *s = stream_of(st);
	if (s->capture) {
		s->invalid = true; /* an event from outside the capture */
		return fail(cudaErrorStreamCaptureIsolation);
	}
	CUstream_st *other = ev->stream;
	const unsigned long seq = ev->seq;
	if (!other || other == s)
		return cudaSuccess;
	return submit(st, [other, seq]() {
		if (other == &legacy || streams.count(other))
			run_until(other, seq);
	}, "event wait");
}

/* ---- cuBLAS ---- */

} // extern "C"

struct cublasContext {
	cudaStream_t stream = nullptr;
	void *workspace = nullptr;
};

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
	INJECT(CUBLAS_STATUS_ALLOC_FAILED);
	*h = new cublasContext;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h)
{
	INJECT(CUBLAS_STATUS_INTERNAL_ERROR);
	delete h;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t st)
{
	INJECT(CUBLAS_STATUS_INTERNAL_ERROR);
	h->stream = st;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
	INJECT(CUBLAS_STATUS_INTERNAL_ERROR);
	(void)h;
	(void)mode;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t bytes)
{
	INJECT(CUBLAS_STATUS_INTERNAL_ERROR);
	LOCKED;
	if (bytes && !is_device(ws, bytes))
		return CUBLAS_STATUS_INVALID_VALUE;
	h->workspace = ws;
	return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t s)
{
	switch (s) {
	case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
	case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
	case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
	case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
	case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
	default: return "CUBLAS_STATUS_ERROR";
	}
}

/* C = alpha op(A) op(B) + beta C, column-major, on the handle's stream;
 * alpha and beta are read at the call (host pointer mode) */
cublasStatus_t cublasSgemm_v2(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
			      int m, int n, int k, const float *alpha, const float *A, int lda,
			      const float *B, int ldb, const float *beta, float *C, int ldc)
{
	INJECT(CUBLAS_STATUS_EXECUTION_FAILED);
	LOCKED;
	const int a_cols = ta == CUBLAS_OP_N ? k : m, b_cols = tb == CUBLAS_OP_N ? n : k;
	if (m < 0 || n < 0 || k < 0 || !is_device(A, (size_t)lda * a_cols * sizeof(float)) ||
	    !is_device(B, (size_t)ldb * b_cols * sizeof(float)) ||
	    !is_device(C, (size_t)ldc * n * sizeof(float)))
		return CUBLAS_STATUS_INVALID_VALUE;
	if (!h->workspace && capturing && capturing == stream_of(h->stream))
		return CUBLAS_STATUS_NOT_SUPPORTED; /* it would allocate one in the capture */
	const float al = *alpha, be = *beta;
	const cudaError_t e = submit(h->stream, [=]() {
		for (int j = 0; j < n; j++)
			for (int i = 0; i < m; i++) {
				double s = 0;
				for (int l = 0; l < k; l++) {
					const float a = ta == CUBLAS_OP_N ? A[i + (size_t)l * lda]
									  : A[l + (size_t)i * lda];
					const float b = tb == CUBLAS_OP_N ? B[l + (size_t)j * ldb]
									  : B[j + (size_t)l * ldb];
					s += (double)a * b;
				}
				float *c = &C[i + (size_t)j * ldc];
				*c = (float)(al * s + (be != 0 ? be * *c : 0));
			}
	}, "cuBLAS");
	return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

} // extern "C"

/* ---- cuDNN ------------------------------------------------------------------------------ */

struct cudnnContext {
	cudaStream_t stream = nullptr;
};
/* a tensor's or a filter's (k, c, r, s as n, c, h, w) description */
struct descriptor4 {
	cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
	cudnnDataType_t type = CUDNN_DATA_FLOAT;
	int n = 0, c = 0, h = 0, w = 0;
};
struct cudnnTensorStruct : descriptor4 {
};
struct cudnnFilterStruct : descriptor4 {
};
struct cudnnConvolutionStruct {
	int pad_h = 0, pad_w = 0, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
	cudnnMathType_t math = CUDNN_DEFAULT_MATH;
	cudnnDataType_t compute = CUDNN_DATA_FLOAT;
};

namespace {

int legacy_live; /* the tensor, filter and convolution descriptors not yet destroyed */

/* An operand as cuDNN sees it: dims n, c, h, w (a filter's k, c, r, s),
 * laid out NCHW or NHWC (KRSC), float or bf16. */
struct operand {
	void *p;
	cudnnDataType_t type;
	bool nhwc;
	int n, c, h, w;
	size_t index(int i, int j, int y, int x) const
	{
		return nhwc ? (((size_t)i * h + y) * w + x) * c + j
			    : (((size_t)i * c + j) * h + y) * w + x;
	}
	size_t bytes() const
	{
		return (size_t)n * c * h * w * (type == CUDNN_DATA_BFLOAT16 ? 2 : 4);
	}
	double get(int i, int j, int y, int x) const
	{
		const size_t k = index(i, j, y, x);
		return type == CUDNN_DATA_BFLOAT16 ? (double)__bfloat162float(((__nv_bfloat16 *)p)[k])
						   : (double)((float *)p)[k];
	}
	/* v = alpha r + beta v, rounded to float, moved by nudge units in
	 * the last place, then rounded to the operand's type */
	void put(int i, int j, int y, int x, double r, double alpha, double beta, int nudge) const
	{
		const size_t k = index(i, j, y, x);
		double v = alpha * r;
		if (beta != 0)
			v += beta * get(i, j, y, x);
		float f = (float)v;
		if (nudge)
			f = nextafterf(f, nudge > 0 ? INFINITY : -INFINITY);
		if (type == CUDNN_DATA_BFLOAT16)
			((__nv_bfloat16 *)p)[k] = __float2bfloat16_rn(f);
		else
			((float *)p)[k] = f;
	}
};

operand of_tensor(const descriptor4 *d, const void *p)
{
	return operand{(void *)p, d->type, d->format == CUDNN_TENSOR_NHWC, d->n, d->c, d->h, d->w};
}

operand of_filter(const cudnnFilterStruct *d, const void *p)
{
	return of_tensor(d, p);
}

cudnnStatus_t describe4(descriptor4 *d, cudnnTensorFormat_t format, cudnnDataType_t type, int n,
			int c, int h, int w)
{
	if (n < 1 || c < 1 || h < 1 || w < 1 ||
	    (type != CUDNN_DATA_FLOAT && type != CUDNN_DATA_BFLOAT16))
		return CUDNN_STATUS_BAD_PARAM;
	d->format = format;
	d->type = type;
	d->n = n;
	d->c = c;
	d->h = h;
	d->w = w;
	return CUDNN_STATUS_SUCCESS;
}

int out_dim(int in, int pad, int filter, int stride, int dil)
{
	return (in + 2 * pad - ((filter - 1) * dil + 1)) / stride + 1;
}

/* x, w, y agree with each other and with the convolution, lie in device
 * memory, and the workspace is what the algorithm asked for */
cudnnStatus_t check(const cudnnConvolutionStruct *cv, const operand &x, const operand &w,
		    const operand &y, const void *ws, size_t ws_bytes, size_t ws_needed)
{
	if (x.type != w.type || x.type != y.type || x.c != w.c || y.c != w.n || x.n != y.n ||
	    y.h != out_dim(x.h, cv->pad_h, w.h, cv->stride_h, cv->dil_h) ||
	    y.w != out_dim(x.w, cv->pad_w, w.w, cv->stride_w, cv->dil_w))
		return CUDNN_STATUS_BAD_PARAM;
	if (!is_device(x.p, x.bytes()) || !is_device(w.p, w.bytes()) || !is_device(y.p, y.bytes()))
		return CUDNN_STATUS_BAD_PARAM;
	if (ws_bytes < ws_needed || (ws_needed && !is_device(ws, ws_needed)))
		return CUDNN_STATUS_BAD_PARAM;
	if (x.type == CUDNN_DATA_BFLOAT16 && cv->math == CUDNN_FMA_MATH)
		return CUDNN_STATUS_NOT_SUPPORTED; /* bf16 runs on tensor cores */
	return CUDNN_STATUS_SUCCESS;
}

/* The workspace each algorithm of the stand-in asks for: some, so that
 * the backend's workspace must grow and be passed */
size_t workspace_for(const operand &x, int algo)
{
	return algo ? (size_t)1024 * x.c : 0;
}

enum { DIR_Y, DIR_DX, DIR_DW };

/* f(i, k, oy, ox, c, r, q, iy, ix) for every product of the convolution:
 * output (i, k, oy, ox) takes input (i, c, iy, ix) times filter tap
 * (k, c, r, q) */
template <typename F>
void for_each_product(const cudnnConvolutionStruct &cv, const operand &x, const operand &w,
		      const operand &y, F f)
{
	for (int i = 0; i < y.n; i++)
		for (int k = 0; k < y.c; k++)
			for (int oy = 0; oy < y.h; oy++)
				for (int ox = 0; ox < y.w; ox++)
					for (int c = 0; c < x.c; c++)
						for (int r = 0; r < w.h; r++) {
							const int iy = oy * cv.stride_h - cv.pad_h + r * cv.dil_h;
							if (iy < 0 || iy >= x.h)
								continue;
							for (int q = 0; q < w.w; q++) {
								const int ix =
									ox * cv.stride_w - cv.pad_w + q * cv.dil_w;
								if (ix >= 0 && ix < x.w)
									f(i, k, oy, ox, c, r, q, iy, ix);
							}
						}
}

/* How an algorithm or engine computes, besides in double: on inputs
 * rounded to bf16 (an fp32 engine that converts its inputs down), and
 * with bits that vary from run to run (a nondeterministic one: a quarter
 * of its outputs, drawn anew at every call, a unit in the last place of a
 * float off, as reductions in another order leave them). */
struct conv_numerics {
	bool down_convert, nondeterministic;
};

uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A different draw at every call of every run. */
uint64_t nondeterministic_draw()
{
	static uint64_t calls = mix64((uint64_t)getpid() ^ ((uint64_t)now_ms() << 20));
	return mix64(++calls);
}

/* one convolution direction, in double: y from x and w, or (y holding dy)
 * dx into x, or dw into w */
/* An operand's values in double, NCHW (KCRS), read once, so that the
 * products below index a plain array; rounded to bf16 first for an
 * engine that converts its inputs down. */
struct dense {
	std::vector<double> v;
	int c, h, w;
	dense(const operand &o, bool round_bf16)
		: v((size_t)o.n * o.c * o.h * o.w), c(o.c), h(o.h), w(o.w)
	{
		size_t k = 0;
		for (int i = 0; i < o.n; i++)
			for (int j = 0; j < o.c; j++)
				for (int y = 0; y < o.h; y++)
					for (int x = 0; x < o.w; x++, k++) {
						const double d = o.get(i, j, y, x);
						v[k] = round_bf16 ? (double)__bfloat162float(
									    __float2bfloat16_rn((float)d))
								  : d;
					}
	}
	double operator()(int i, int j, int y, int x) const
	{
		return v[(((size_t)i * c + j) * h + y) * w + x];
	}
};

void convolve(int dir, const cudnnConvolutionStruct cv, operand x, operand w, operand y,
	      double alpha, double beta, conv_numerics how)
{
	const bool down = how.down_convert && x.type == CUDNN_DATA_FLOAT;
	const uint64_t draw = how.nondeterministic ? nondeterministic_draw() : 0;
	const operand &out = dir == DIR_Y ? y : dir == DIR_DX ? x : w;
	std::vector<double> acc((size_t)out.n * out.c * out.h * out.w, 0.0);
	auto at = [&](int a, int b, int c, int d) -> double & {
		return acc[(((size_t)a * out.c + b) * out.h + c) * out.w + d];
	};
	if (dir == DIR_Y) {
		const dense X(x, down), W(w, down);
		for_each_product(cv, x, w, y, [&](int i, int k, int oy, int ox, int c, int r, int q,
						  int iy, int ix) {
			at(i, k, oy, ox) += X(i, c, iy, ix) * W(k, c, r, q);
		});
	} else if (dir == DIR_DX) {
		const dense Y(y, down), W(w, down);
		for_each_product(cv, x, w, y, [&](int i, int k, int oy, int ox, int c, int r, int q,
						  int iy, int ix) {
			at(i, c, iy, ix) += Y(i, k, oy, ox) * W(k, c, r, q);
		});
	} else {
		const dense Y(y, down), X(x, down);
		for_each_product(cv, x, w, y, [&](int i, int k, int oy, int ox, int c, int r, int q,
						  int iy, int ix) {
			at(k, c, r, q) += Y(i, k, oy, ox) * X(i, c, iy, ix);
		});
	}
	size_t k = 0;
	for (int a = 0; a < out.n; a++)
		for (int b = 0; b < out.c; b++)
			for (int c = 0; c < out.h; c++)
				for (int d = 0; d < out.w; d++, k++) {
					const uint64_t r = draw ? mix64(draw ^ k) : 0;
					const int nudge = (r & 3) ? 0 : (r & 4) ? 1 : -1;
					out.put(a, b, c, d, at(a, b, c, d), alpha, beta,
						draw ? nudge : 0);
				}
}

cudnnStatus_t run(cudnnHandle_t h, int dir, const void *alpha, const cudnnConvolutionStruct *cv,
		  const operand &x, const operand &w, const operand &y, int algo, void *ws,
		  size_t ws_bytes, const void *beta)
{
	if (dir == DIR_DW && x.type == CUDNN_DATA_BFLOAT16 && x.c == 3)
		return CUDNN_STATUS_NOT_SUPPORTED; /* none was offered (rank) */
	const cudnnStatus_t st = check(cv, x, w, y, ws, ws_bytes, workspace_for(x, algo));
	if (st != CUDNN_STATUS_SUCCESS)
		return st;
	const double a = *(const float *)alpha, b = *(const float *)beta;
	const cudnnConvolutionStruct c = *cv; /* the call's descriptors, as a graph keeps them */
	const conv_numerics how{false, dir != DIR_Y && algo == 0};
	return submit(h->stream, [=]() { convolve(dir, c, x, w, y, a, b, how); }, "cuDNN") == cudaSuccess
		       ? CUDNN_STATUS_SUCCESS
		       : CUDNN_STATUS_EXECUTION_FAILED;
}

/* The ranked list: algorithm 0 (nondeterministic in the backward
 * directions, without workspace), then algorithm 1 (deterministic, with
 * a workspace); in bf16 under tensor-op math, in float under the default.
 * None is offered for bf16 filter gradients of 3-channel inputs (the
 * stem's images), so that the backend's fallback to fp32 for one
 * direction of a shape runs in whole steps and graphs. */
template <typename Perf, typename Algo>
void rank(const cudnnTensorStruct *x, bool backward, bool filter, int want, int *got, Perf *perf)
{
	*got = want < 2 ? want : 2;
	const operand xo = of_tensor(x, nullptr);
	const bool none = filter && x->type == CUDNN_DATA_BFLOAT16 && x->c == 3;
	for (int i = 0; i < *got; i++) {
		memset(&perf[i], 0, sizeof perf[i]);
		perf[i].algo = (Algo)i;
		perf[i].status = none ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
		perf[i].time = 1.0f + (float)i;
		perf[i].memory = workspace_for(xo, i);
		perf[i].determinism =
			backward && i == 0 ? CUDNN_NON_DETERMINISTIC : CUDNN_DETERMINISTIC;
		perf[i].mathType = x->type == CUDNN_DATA_BFLOAT16 ? CUDNN_TENSOR_OP_MATH
								 : CUDNN_DEFAULT_MATH;
	}
}

/* cudnnFind* runs every algorithm and waits for them */
cudnnStatus_t find_allowed(cudnnHandle_t h)
{
	if (capture_forbids())
		return CUDNN_STATUS_NOT_SUPPORTED;
	wait_all(stream_of(h->stream));
	return CUDNN_STATUS_SUCCESS;
}

} // namespace

extern "C" {

const char *cudnnGetErrorString(cudnnStatus_t s)
{
	switch (s) {
	case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
	case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
	case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
	case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
	case CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED:
		return "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED";
	default: return "CUDNN_STATUS_INTERNAL_ERROR";
	}
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *h)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED);
	*h = new cudnnContext;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t h)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	delete h;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t st)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	h->stream = st;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED);
	LOCKED;
	*d = new cudnnTensorStruct;
	legacy_live++;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	if (d)
		legacy_live--;
	delete d;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED);
	LOCKED;
	*d = new cudnnFilterStruct;
	legacy_live++;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	if (d)
		legacy_live--;
	delete d;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED);
	LOCKED;
	*d = new cudnnConvolutionStruct;
	legacy_live++;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	if (d)
		legacy_live--;
	delete d;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
					 cudnnDataType_t type, int n, int c, int h, int w)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	return describe4(d, format, type, n, c, h, w);
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
					 cudnnTensorFormat_t format, int k, int c, int h, int w)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	return describe4(d, format, type, k, c, h, w);
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h,
					      int pad_w, int u, int v, int dil_h, int dil_w,
					      cudnnConvolutionMode_t mode, cudnnDataType_t compute)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	/* cross-correlation, as the backend and PyTorch define it */
	if (u < 1 || v < 1 || dil_h < 1 || dil_w < 1 || pad_h < 0 || pad_w < 0 ||
	    mode != CUDNN_CROSS_CORRELATION || compute != CUDNN_DATA_FLOAT)
		return CUDNN_STATUS_BAD_PARAM;
	d->pad_h = pad_h;
	d->pad_w = pad_w;
	d->stride_h = u;
	d->stride_w = v;
	d->dil_h = dil_h;
	d->dil_w = dil_w;
	d->compute = compute;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	d->math = m;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t d,
						    const cudnnTensorDescriptor_t x,
						    const cudnnFilterDescriptor_t w, int *n, int *c,
						    int *h, int *wo)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	if (x->c != w->c)
		return CUDNN_STATUS_BAD_PARAM;
	*n = x->n;
	*c = w->n;
	*h = out_dim(x->h, d->pad_h, w->h, d->stride_h, d->dil_h);
	*wo = out_dim(x->w, d->pad_w, w->w, d->stride_w, d->dil_w);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h,
						     const cudnnTensorDescriptor_t x,
						     const cudnnFilterDescriptor_t w,
						     const cudnnConvolutionDescriptor_t cv,
						     const cudnnTensorDescriptor_t y, int want,
						     int *got, cudnnConvolutionFwdAlgoPerf_t *perf)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	(void)h, (void)w, (void)cv, (void)y;
	rank<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(x, false, false, want, got,
								   perf);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t h,
						   const cudnnTensorDescriptor_t x,
						   const cudnnFilterDescriptor_t w,
						   const cudnnConvolutionDescriptor_t cv,
						   const cudnnTensorDescriptor_t y, int want, int *got,
						   cudnnConvolutionFwdAlgoPerf_t *perf)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	const cudnnStatus_t s = find_allowed(h);
	return s != CUDNN_STATUS_SUCCESS
		       ? s
		       : cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, cv, y, want, got, perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
	cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t dx, int want, int *got,
	cudnnConvolutionBwdDataAlgoPerf_t *perf)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	(void)h, (void)w, (void)dy, (void)cv;
	rank<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(dx, true, false, want,
									      got, perf);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(
	cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t dx, int want, int *got,
	cudnnConvolutionBwdDataAlgoPerf_t *perf)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	const cudnnStatus_t s = find_allowed(h);
	return s != CUDNN_STATUS_SUCCESS
		       ? s
		       : cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, dy, cv, dx, want, got,
								     perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
	cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnFilterDescriptor_t dw, int want, int *got,
	cudnnConvolutionBwdFilterAlgoPerf_t *perf)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	(void)h, (void)dy, (void)cv, (void)dw;
	rank<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(x, true, true,
										  want, got, perf);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(
	cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnFilterDescriptor_t dw, int want, int *got,
	cudnnConvolutionBwdFilterAlgoPerf_t *perf)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	const cudnnStatus_t s = find_allowed(h);
	return s != CUDNN_STATUS_SUCCESS
		       ? s
		       : cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, dy, cv, dw, want, got,
								       perf);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h,
						      const cudnnTensorDescriptor_t x,
						      const cudnnFilterDescriptor_t w,
						      const cudnnConvolutionDescriptor_t cv,
						      const cudnnTensorDescriptor_t y,
						      cudnnConvolutionFwdAlgo_t algo, size_t *bytes)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	(void)h, (void)w, (void)cv, (void)y;
	*bytes = workspace_for(of_tensor(x, nullptr), (int)algo);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
	cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t dx,
	cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	(void)h, (void)w, (void)dy, (void)cv;
	*bytes = workspace_for(of_tensor(dx, nullptr), (int)algo);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
	cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnFilterDescriptor_t dw,
	cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	(void)h, (void)dy, (void)cv, (void)dw;
	*bytes = workspace_for(of_tensor(x, nullptr), (int)algo);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
				      const cudnnTensorDescriptor_t xd, const void *x,
				      const cudnnFilterDescriptor_t wd, const void *w,
				      const cudnnConvolutionDescriptor_t cv,
				      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes,
				      const void *beta, const cudnnTensorDescriptor_t yd, void *y)
{
	INJECT(CUDNN_STATUS_EXECUTION_FAILED);
	LOCKED;
	return run(h, DIR_Y, alpha, cv, of_tensor(xd, x), of_filter(wd, w), of_tensor(yd, y),
		   (int)algo, ws, ws_bytes, beta);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
					   const cudnnFilterDescriptor_t wd, const void *w,
					   const cudnnTensorDescriptor_t dyd, const void *dy,
					   const cudnnConvolutionDescriptor_t cv,
					   cudnnConvolutionBwdDataAlgo_t algo, void *ws,
					   size_t ws_bytes, const void *beta,
					   const cudnnTensorDescriptor_t dxd, void *dx)
{
	INJECT(CUDNN_STATUS_EXECUTION_FAILED);
	LOCKED;
	return run(h, DIR_DX, alpha, cv, of_tensor(dxd, dx), of_filter(wd, w), of_tensor(dyd, dy),
		   (int)algo, ws, ws_bytes, beta);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
					     const cudnnTensorDescriptor_t xd, const void *x,
					     const cudnnTensorDescriptor_t dyd, const void *dy,
					     const cudnnConvolutionDescriptor_t cv,
					     cudnnConvolutionBwdFilterAlgo_t algo, void *ws,
					     size_t ws_bytes, const void *beta,
					     const cudnnFilterDescriptor_t dwd, void *dw)
{
	INJECT(CUDNN_STATUS_EXECUTION_FAILED);
	LOCKED;
	return run(h, DIR_DW, alpha, cv, of_tensor(xd, x), of_filter(dwd, dw), of_tensor(dyd, dy),
		   (int)algo, ws, ws_bytes, beta);
}

} // extern "C"

/* ---- cuDNN's graph API ------------------------------------------------------------------
 *
 * Descriptors keep the attributes they are set, of the types cuDNN takes
 * for them; a finalized one takes no more, and one not finalized answers
 * no query. What the stand-in supports is what a convolution needs: 4-D
 * tensors (float or bf16, NCHW or NHWC strides), a cross-correlation, an
 * operation graph of one convolution in any direction, heuristics, plans,
 * variant packs. Its engines, in the heuristics' order:
 *
 *   fp32: 0 tensor cores, inputs converted down (it computes on inputs
 *           rounded to bf16, so an fp32 result from it shows);
 *         1 nondeterministic in the backward directions, no workspace;
 *         2 deterministic, with a workspace;
 *   bf16: 0 tensor cores, nondeterministic in the backward directions;
 *         1 tensor cores, deterministic, with a workspace.
 *
 * None of them finalizes a plan for a bf16 filter gradient of a 3-channel
 * input (the stem's), nor, under MP_EMU_CUDNN_ADD=0, one with beta 1. Finalizing heuristics or a plan while the thread
 * captures fails (stricter than a device may be: the backend builds its
 * plans before it records). cudnnBackendExecute checks the variant pack
 * against the plan's tensors (every unique id, device memory with room
 * for the tensor, the byte alignment the tensor declared, the plan's
 * workspace), and that the descriptors the plan was made from still
 * live, then queues the convolution as the legacy calls do. */

namespace {

struct graph_value {
	cudnnBackendAttributeType_t type;
	int64_t count;
	std::vector<unsigned char> bytes;
};

struct graph_descriptor {
	cudnnBackendDescriptorType_t type;
	bool finalized = false;
	std::map<int, graph_value> attrs;
	/* an engine, an engine config or a plan: its operation graph and engine */
	graph_descriptor *graph = nullptr;
	int engine = -1;
	graph_descriptor *op = nullptr; /* an operation graph's convolution */
	int64_t workspace = 0; /* a plan's */
};

std::set<graph_descriptor *> graph_live; /* created and not yet destroyed */

size_t element_size(cudnnBackendAttributeType_t t)
{
	switch (t) {
	case CUDNN_TYPE_HANDLE: return sizeof(cudnnHandle_t);
	case CUDNN_TYPE_DATA_TYPE: return sizeof(cudnnDataType_t);
	case CUDNN_TYPE_INT64: return sizeof(int64_t);
	case CUDNN_TYPE_FLOAT: return sizeof(float);
	case CUDNN_TYPE_DOUBLE: return sizeof(double);
	case CUDNN_TYPE_VOID_PTR: return sizeof(void *);
	case CUDNN_TYPE_CONVOLUTION_MODE: return sizeof(cudnnConvolutionMode_t);
	case CUDNN_TYPE_HEUR_MODE: return sizeof(cudnnBackendHeurMode_t);
	case CUDNN_TYPE_NUMERICAL_NOTE: return sizeof(cudnnBackendNumericalNote_t);
	case CUDNN_TYPE_BACKEND_DESCRIPTOR: return sizeof(cudnnBackendDescriptor_t);
	default: return 0;
	}
}

/* The three convolution operations' attributes, as conv_graph.cu names them. */
struct conv_op_attrs {
	cudnnBackendDescriptorType_t type;
	int dir;
	cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
};
const conv_op_attrs CONV_OPS[3] = {
	{CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, DIR_Y,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
	{CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR, DIR_DX,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
	{CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR, DIR_DW,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA},
};

const conv_op_attrs *conv_op_of(cudnnBackendDescriptorType_t t)
{
	for (const conv_op_attrs &o : CONV_OPS)
		if (o.type == t)
			return &o;
	return nullptr;
}

/* The type(s) an attribute of a descriptor of type t takes; false when
 * the stand-in does not know the attribute for that descriptor. */
bool attribute_type_ok(cudnnBackendDescriptorType_t t, cudnnBackendAttributeName_t name,
		       cudnnBackendAttributeType_t type, bool *known)
{
	struct rule {
		cudnnBackendDescriptorType_t t;
		cudnnBackendAttributeName_t name;
		cudnnBackendAttributeType_t type;
	};
	static const rule rules[] = {
		{CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE},
		{CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE},
		{CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_CONV_MODE,
		 CUDNN_TYPE_CONVOLUTION_MODE},
		{CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, CUDNN_ATTR_OPERATIONGRAPH_OPS,
		 CUDNN_TYPE_BACKEND_DESCRIPTOR},
		{CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE},
		{CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
		 CUDNN_TYPE_BACKEND_DESCRIPTOR},
		{CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE},
		{CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE},
		{CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
		 CUDNN_TYPE_BACKEND_DESCRIPTOR},
		{CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64},
		{CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
		 CUDNN_TYPE_VOID_PTR},
		{CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR},
	};
	*known = true;
	for (const rule &r : rules)
		if (r.t == t && r.name == name)
			return r.type == type;
	if (const conv_op_attrs *o = conv_op_of(t)) {
		if (name == o->x || name == o->w || name == o->y || name == o->conv)
			return type == CUDNN_TYPE_BACKEND_DESCRIPTOR;
		if (name == o->alpha || name == o->beta)
			return type == CUDNN_TYPE_FLOAT || type == CUDNN_TYPE_DOUBLE;
	}
	*known = false;
	return false;
}

graph_descriptor *live(cudnnBackendDescriptor_t d)
{
	graph_descriptor *g = (graph_descriptor *)d;
	return graph_live.count(g) ? g : nullptr;
}

const graph_value *value_of(const graph_descriptor *g, cudnnBackendAttributeName_t name)
{
	auto it = g->attrs.find(name);
	return it == g->attrs.end() ? nullptr : &it->second;
}

/* The attribute's int64 values, when it has exactly n of them. */
bool int64s(const graph_descriptor *g, cudnnBackendAttributeName_t name, int64_t n, int64_t *out)
{
	const graph_value *v = value_of(g, name);
	if (!v || v->type != CUDNN_TYPE_INT64 || v->count != n)
		return false;
	memcpy(out, v->bytes.data(), (size_t)n * sizeof *out);
	return true;
}

/* The descriptor the attribute names (its first), when it lives, is
 * finalized and of type t; else null. */
graph_descriptor *linked(const graph_descriptor *g, cudnnBackendAttributeName_t name,
			 cudnnBackendDescriptorType_t t)
{
	const graph_value *v = value_of(g, name);
	if (!v || v->count < 1)
		return nullptr;
	cudnnBackendDescriptor_t d;
	memcpy(&d, v->bytes.data(), sizeof d);
	graph_descriptor *l = live(d);
	return l && l->finalized && l->type == t ? l : nullptr;
}

double scalar(const graph_descriptor *g, cudnnBackendAttributeName_t name)
{
	const graph_value *v = value_of(g, name);
	if (v->type == CUDNN_TYPE_DOUBLE) {
		double d;
		memcpy(&d, v->bytes.data(), sizeof d);
		return d;
	}
	float f;
	memcpy(&f, v->bytes.data(), sizeof f);
	return f;
}

template <typename T> bool one_value(const graph_descriptor *g, cudnnBackendAttributeName_t name, T *out)
{
	const graph_value *v = value_of(g, name);
	if (!v || v->count != 1 || v->bytes.size() != sizeof(T))
		return false;
	memcpy(out, v->bytes.data(), sizeof(T));
	return true;
}

/* A finalized tensor as the convolution sees it (no pointer yet). */
struct graph_tensor {
	operand o;
	int64_t uid, align;
};

cudnnStatus_t tensor_of(const graph_descriptor *g, graph_tensor *t)
{
	cudnnDataType_t type;
	int64_t dims[4], strides[4];
	if (!one_value(g, CUDNN_ATTR_TENSOR_DATA_TYPE, &type) ||
	    !one_value(g, CUDNN_ATTR_TENSOR_UNIQUE_ID, &t->uid) ||
	    !one_value(g, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, &t->align))
		return CUDNN_STATUS_BAD_PARAM;
	const graph_value *d = value_of(g, CUDNN_ATTR_TENSOR_DIMENSIONS);
	if (!d || d->count != 4)
		return d ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_BAD_PARAM;
	if (!int64s(g, CUDNN_ATTR_TENSOR_DIMENSIONS, 4, dims) ||
	    !int64s(g, CUDNN_ATTR_TENSOR_STRIDES, 4, strides))
		return CUDNN_STATUS_BAD_PARAM;
	for (int64_t v : dims)
		if (v < 1 || v > (1 << 30))
			return CUDNN_STATUS_BAD_PARAM;
	if (type != CUDNN_DATA_FLOAT && type != CUDNN_DATA_BFLOAT16)
		return CUDNN_STATUS_NOT_SUPPORTED;
	if (t->align < 1 || (t->align & (t->align - 1)))
		return CUDNN_STATUS_BAD_PARAM;
	const int64_t n = dims[0], c = dims[1], h = dims[2], w = dims[3];
	(void)n;
	const int64_t nchw[4] = {c * h * w, h * w, w, 1}, nhwc[4] = {c * h * w, 1, w * c, c};
	const bool is_nchw = !memcmp(strides, nchw, sizeof nchw),
		   is_nhwc = !memcmp(strides, nhwc, sizeof nhwc);
	if (!is_nchw && !is_nhwc)
		return CUDNN_STATUS_NOT_SUPPORTED; /* packed layouts only, here */
	t->o = operand{nullptr, type, !is_nchw, (int)dims[0], (int)dims[1], (int)dims[2],
		       (int)dims[3]};
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t conv_of(const graph_descriptor *g, cudnnConvolutionStruct *cv)
{
	cudnnDataType_t comp;
	cudnnConvolutionMode_t mode;
	int64_t dims, dil[2], str[2], pre[2], post[2];
	if (!one_value(g, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, &comp) ||
	    !one_value(g, CUDNN_ATTR_CONVOLUTION_CONV_MODE, &mode) ||
	    !one_value(g, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, &dims))
		return CUDNN_STATUS_BAD_PARAM;
	if (dims != 2)
		return CUDNN_STATUS_NOT_SUPPORTED;
	if (!int64s(g, CUDNN_ATTR_CONVOLUTION_DILATIONS, 2, dil) ||
	    !int64s(g, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, 2, str) ||
	    !int64s(g, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, 2, pre) ||
	    !int64s(g, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, 2, post))
		return CUDNN_STATUS_BAD_PARAM;
	if (mode != CUDNN_CROSS_CORRELATION || comp != CUDNN_DATA_FLOAT || pre[0] != post[0] ||
	    pre[1] != post[1])
		return CUDNN_STATUS_NOT_SUPPORTED; /* what a network of ours never asks */
	if (dil[0] < 1 || dil[1] < 1 || str[0] < 1 || str[1] < 1 || pre[0] < 0 || pre[1] < 0)
		return CUDNN_STATUS_BAD_PARAM;
	cv->pad_h = (int)pre[0], cv->pad_w = (int)pre[1];
	cv->stride_h = (int)str[0], cv->stride_w = (int)str[1];
	cv->dil_h = (int)dil[0], cv->dil_w = (int)dil[1];
	cv->compute = comp;
	return CUDNN_STATUS_SUCCESS;
}

/* A convolution operation, its parts resolved. */
struct graph_conv {
	const conv_op_attrs *names;
	cudnnConvolutionStruct cv;
	graph_tensor x, w, y;
	double alpha, beta;
};

cudnnStatus_t conv_op(const graph_descriptor *op, graph_conv *c)
{
	c->names = conv_op_of(op->type);
	const conv_op_attrs *n = c->names;
	const graph_descriptor *x = linked(op, n->x, CUDNN_BACKEND_TENSOR_DESCRIPTOR),
			       *w = linked(op, n->w, CUDNN_BACKEND_TENSOR_DESCRIPTOR),
			       *y = linked(op, n->y, CUDNN_BACKEND_TENSOR_DESCRIPTOR),
			       *cv = linked(op, n->conv, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
	if (!x || !w || !y || !cv || !value_of(op, n->alpha) || !value_of(op, n->beta))
		return CUDNN_STATUS_BAD_PARAM;
	cudnnStatus_t st;
	if ((st = tensor_of(x, &c->x)) != CUDNN_STATUS_SUCCESS ||
	    (st = tensor_of(w, &c->w)) != CUDNN_STATUS_SUCCESS ||
	    (st = tensor_of(y, &c->y)) != CUDNN_STATUS_SUCCESS ||
	    (st = conv_of(cv, &c->cv)) != CUDNN_STATUS_SUCCESS)
		return st;
	if (c->x.uid == c->w.uid || c->x.uid == c->y.uid || c->w.uid == c->y.uid)
		return CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES;
	c->alpha = scalar(op, n->alpha);
	c->beta = scalar(op, n->beta);
	const operand &xo = c->x.o, &wo = c->w.o, &yo = c->y.o;
	if (xo.type != wo.type || xo.type != yo.type || xo.c != wo.c || yo.c != wo.n ||
	    xo.n != yo.n || yo.h != out_dim(xo.h, c->cv.pad_h, wo.h, c->cv.stride_h, c->cv.dil_h) ||
	    yo.w != out_dim(xo.w, c->cv.pad_w, wo.w, c->cv.stride_w, c->cv.dil_w))
		return CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
	return CUDNN_STATUS_SUCCESS;
}

/* The engines the heuristics rank for a graph's convolution (see above). */
struct engine_info {
	bool tensor_core, down_convert, nondeterministic;
	size_t workspace;
	bool supported;
};

int engine_count(const graph_conv &c)
{
	return c.x.o.type == CUDNN_DATA_BFLOAT16 ? 2 : 3;
}

engine_info engine_of(const graph_conv &c, int e)
{
	const bool bf16 = c.x.o.type == CUDNN_DATA_BFLOAT16, backward = c.names->dir != DIR_Y;
	engine_info i{};
	i.tensor_core = bf16 || e == 0;
	i.down_convert = !bf16 && e == 0;
	i.nondeterministic = backward && (bf16 ? e == 0 : e == 1);
	i.workspace = e == (bf16 ? 1 : 2) ? workspace_for(c.x.o, 1) : 0;
	i.supported = !(bf16 && c.names->dir == DIR_DW && c.x.o.c == 3);
	return i;
}

/* MP_EMU_CUDNN_ADD=0: no engine takes beta other than 0 (none adds to
 * its output), so that the backend's way around that runs. */
bool engines_add()
{
	const char *v = getenv("MP_EMU_CUDNN_ADD");
	return !(v && !strcmp(v, "0"));
}

/* What finalizing a descriptor of each type checks and works out. */
cudnnStatus_t finalize(graph_descriptor *g)
{
	switch (g->type) {
	case CUDNN_BACKEND_TENSOR_DESCRIPTOR: {
		graph_tensor t;
		return tensor_of(g, &t);
	}
	case CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR: {
		cudnnConvolutionStruct cv;
		return conv_of(g, &cv);
	}
	case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: {
		const graph_value *ops = value_of(g, CUDNN_ATTR_OPERATIONGRAPH_OPS);
		cudnnHandle_t h;
		if (!ops || !one_value(g, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, &h) || !h)
			return CUDNN_STATUS_BAD_PARAM;
		if (ops->count != 1)
			return CUDNN_STATUS_NOT_SUPPORTED; /* one convolution a graph, here */
		cudnnBackendDescriptor_t d;
		memcpy(&d, ops->bytes.data(), sizeof d);
		graph_descriptor *op = live(d);
		if (!op || !op->finalized || !conv_op_of(op->type))
			return CUDNN_STATUS_BAD_PARAM;
		g->op = op;
		return CUDNN_STATUS_SUCCESS;
	}
	case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: {
		cudnnBackendHeurMode_t mode;
		if (!linked(g, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
			    CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR) ||
		    !one_value(g, CUDNN_ATTR_ENGINEHEUR_MODE, &mode))
			return CUDNN_STATUS_BAD_PARAM;
		if (capture_forbids())
			return CUDNN_STATUS_NOT_SUPPORTED;
		g->graph = linked(g, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
				  CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
		return CUDNN_STATUS_SUCCESS;
	}
	case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: {
		cudnnHandle_t h;
		graph_descriptor *cfg = linked(g, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
					       CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
		if (!cfg || !one_value(g, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, &h) || !h)
			return CUDNN_STATUS_BAD_PARAM;
		if (capture_forbids())
			return CUDNN_STATUS_NOT_SUPPORTED;
		graph_conv c;
		if (!live(cfg->graph) || conv_op(cfg->graph->op, &c) != CUDNN_STATUS_SUCCESS)
			return CUDNN_STATUS_BAD_PARAM;
		const engine_info e = engine_of(c, cfg->engine);
		if (!e.supported || (c.beta != 0 && !engines_add()))
			return CUDNN_STATUS_NOT_SUPPORTED;
		g->graph = cfg->graph;
		g->engine = cfg->engine;
		g->workspace = (int64_t)e.workspace;
		return CUDNN_STATUS_SUCCESS;
	}
	case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: {
		const graph_value *ids = value_of(g, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS),
				  *ptrs = value_of(g, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS);
		if (!ids || !ptrs || ids->count != ptrs->count ||
		    !value_of(g, CUDNN_ATTR_VARIANT_PACK_WORKSPACE))
			return CUDNN_STATUS_BAD_PARAM;
		return CUDNN_STATUS_SUCCESS;
	}
	default:
		if (conv_op_of(g->type)) {
			graph_conv c;
			return conv_op(g, &c);
		}
		return CUDNN_STATUS_NOT_SUPPORTED; /* engines and configs come from heuristics */
	}
}

/* Fills descriptor out (created, of type t, not finalized) as a result. */
graph_descriptor *fillable(cudnnBackendDescriptor_t d, cudnnBackendDescriptorType_t t)
{
	graph_descriptor *g = live(d);
	return g && g->type == t && !g->finalized ? g : nullptr;
}

cudnnStatus_t put_values(cudnnBackendAttributeType_t type, int64_t requested, int64_t *count,
			 void *values, const void *from, int64_t n)
{
	if (requested < 0 || !count || (requested > 0 && !values))
		return CUDNN_STATUS_BAD_PARAM;
	*count = n;
	const int64_t k = requested < n ? requested : n;
	if (k > 0)
		memcpy(values, from, (size_t)k * element_size(type));
	return CUDNN_STATUS_SUCCESS;
}

/* The uid's pointer in the pack, or null. */
void *pointer_for(const graph_descriptor *pack, int64_t uid)
{
	const graph_value *ids = value_of(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS),
			  *ptrs = value_of(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS);
	for (int64_t i = 0; i < ids->count; i++) {
		int64_t id;
		memcpy(&id, ids->bytes.data() + i * sizeof id, sizeof id);
		if (id == uid) {
			void *p;
			memcpy(&p, ptrs->bytes.data() + i * sizeof p, sizeof p);
			return p;
		}
	}
	return nullptr;
}

/* Whether every descriptor a plan was made from still lives. */
bool plan_sources_live(const graph_descriptor *plan)
{
	const graph_descriptor *cfg = linked(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
					     CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
	const graph_descriptor *graph = plan->graph;
	if (!cfg || !live((cudnnBackendDescriptor_t)graph) || !live(graph->op))
		return false;
	const conv_op_attrs *n = conv_op_of(graph->op->type);
	return linked(graph->op, n->x, CUDNN_BACKEND_TENSOR_DESCRIPTOR) &&
	       linked(graph->op, n->w, CUDNN_BACKEND_TENSOR_DESCRIPTOR) &&
	       linked(graph->op, n->y, CUDNN_BACKEND_TENSOR_DESCRIPTOR) &&
	       linked(graph->op, n->conv, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
}

/* The operand's pointer from the pack: there, aligned as declared, in
 * device memory with room for it. */
cudnnStatus_t bind(const graph_descriptor *pack, graph_tensor *t)
{
	t->o.p = pointer_for(pack, t->uid);
	if (!t->o.p)
		return CUDNN_STATUS_BAD_PARAM;
	if ((uintptr_t)t->o.p % (uintptr_t)t->align)
		return CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER;
	return is_device(t->o.p, t->o.bytes()) ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_BAD_PARAM;
}

} // namespace

extern "C" {

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type,
					   cudnnBackendDescriptor_t *d)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED);
	LOCKED;
	if (!d)
		return CUDNN_STATUS_BAD_PARAM;
	graph_descriptor *g = new graph_descriptor;
	g->type = type;
	graph_live.insert(g);
	*d = g;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t d)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	graph_descriptor *g = live(d);
	if (!g)
		return CUDNN_STATUS_BAD_PARAM;
	graph_live.erase(g);
	delete g;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t d)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	graph_descriptor *g = live(d);
	if (!g || g->finalized)
		return CUDNN_STATUS_BAD_PARAM;
	const cudnnStatus_t st = finalize(g);
	g->finalized = st == CUDNN_STATUS_SUCCESS;
	return st;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t d,
				       cudnnBackendAttributeName_t name,
				       cudnnBackendAttributeType_t type, int64_t count,
				       const void *values)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	graph_descriptor *g = live(d);
	if (!g)
		return CUDNN_STATUS_BAD_PARAM;
	if (g->finalized)
		return CUDNN_STATUS_NOT_INITIALIZED; /* finalized: it takes no more */
	bool known;
	if (!attribute_type_ok(g->type, name, type, &known))
		return known ? CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE : CUDNN_STATUS_NOT_SUPPORTED;
	if (count < 1 || !values)
		return CUDNN_STATUS_BAD_PARAM;
	if (type == CUDNN_TYPE_BACKEND_DESCRIPTOR)
		for (int64_t i = 0; i < count; i++) {
			const graph_descriptor *l = live(((const cudnnBackendDescriptor_t *)values)[i]);
			if (!l)
				return CUDNN_STATUS_BAD_PARAM;
			if (!l->finalized)
				return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
		}
	graph_value v{type, count, {}};
	const unsigned char *b = (const unsigned char *)values;
	v.bytes.assign(b, b + (size_t)count * element_size(type));
	g->attrs[name] = std::move(v);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const d,
				       cudnnBackendAttributeName_t name,
				       cudnnBackendAttributeType_t type, int64_t requested,
				       int64_t *count, void *values)
{
	INJECT(CUDNN_STATUS_INTERNAL_ERROR);
	LOCKED;
	const graph_descriptor *g = live(d);
	if (!g)
		return CUDNN_STATUS_BAD_PARAM;
	if (!g->finalized)
		return CUDNN_STATUS_NOT_INITIALIZED;
	if (name == CUDNN_ATTR_ENGINEHEUR_RESULTS && g->type == CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR) {
		if (type != CUDNN_TYPE_BACKEND_DESCRIPTOR)
			return CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE;
		graph_conv c;
		if (!live(g->graph) || conv_op(g->graph->op, &c) != CUDNN_STATUS_SUCCESS)
			return CUDNN_STATUS_BAD_PARAM;
		const int n = engine_count(c);
		if (requested < 0 || !count || (requested > 0 && !values))
			return CUDNN_STATUS_BAD_PARAM;
		for (int64_t i = 0; i < requested && i < n; i++)
			if (!fillable(((cudnnBackendDescriptor_t *)values)[i],
				      CUDNN_BACKEND_ENGINECFG_DESCRIPTOR))
				return CUDNN_STATUS_BAD_PARAM;
		for (int64_t i = 0; i < requested && i < n; i++) {
			graph_descriptor *cfg = live(((cudnnBackendDescriptor_t *)values)[i]);
			cfg->graph = g->graph;
			cfg->engine = (int)i;
			cfg->finalized = true;
		}
		*count = n;
		return CUDNN_STATUS_SUCCESS;
	}
	if (name == CUDNN_ATTR_ENGINECFG_ENGINE && g->type == CUDNN_BACKEND_ENGINECFG_DESCRIPTOR) {
		if (type != CUDNN_TYPE_BACKEND_DESCRIPTOR)
			return CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE;
		if (requested < 1 || !count || !values)
			return CUDNN_STATUS_BAD_PARAM;
		graph_descriptor *e =
			fillable(*(cudnnBackendDescriptor_t *)values, CUDNN_BACKEND_ENGINE_DESCRIPTOR);
		if (!e)
			return CUDNN_STATUS_BAD_PARAM;
		e->graph = g->graph;
		e->engine = g->engine;
		e->finalized = true;
		*count = 1;
		return CUDNN_STATUS_SUCCESS;
	}
	if (name == CUDNN_ATTR_ENGINE_NUMERICAL_NOTE && g->type == CUDNN_BACKEND_ENGINE_DESCRIPTOR) {
		if (type != CUDNN_TYPE_NUMERICAL_NOTE)
			return CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE;
		graph_conv c;
		if (!live(g->graph) || conv_op(g->graph->op, &c) != CUDNN_STATUS_SUCCESS)
			return CUDNN_STATUS_BAD_PARAM;
		const engine_info e = engine_of(c, g->engine);
		cudnnBackendNumericalNote_t notes[3];
		int n = 0;
		if (e.tensor_core)
			notes[n++] = CUDNN_NUMERICAL_NOTE_TENSOR_CORE;
		if (e.down_convert)
			notes[n++] = CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS;
		if (e.nondeterministic)
			notes[n++] = CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC;
		return put_values(type, requested, count, values, notes, n);
	}
	if (name == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE &&
	    g->type == CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR) {
		if (type != CUDNN_TYPE_INT64)
			return CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE;
		return put_values(type, requested, count, values, &g->workspace, 1);
	}
	const graph_value *v = value_of(g, name);
	if (!v)
		return CUDNN_STATUS_NOT_SUPPORTED;
	if (v->type != type)
		return CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE;
	return put_values(type, requested, count, values, v->bytes.data(), v->count);
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t h, cudnnBackendDescriptor_t plan_d,
				  cudnnBackendDescriptor_t pack_d)
{
	INJECT(CUDNN_STATUS_EXECUTION_FAILED);
	LOCKED;
	const graph_descriptor *plan = live(plan_d), *pack = live(pack_d);
	cudnnHandle_t plan_handle;
	if (!plan || !pack || plan->type != CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR ||
	    pack->type != CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)
		return CUDNN_STATUS_BAD_PARAM;
	if (!plan->finalized || !pack->finalized)
		return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
	if (!one_value(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, &plan_handle) || plan_handle != h)
		return CUDNN_STATUS_BAD_PARAM;
	if (!plan_sources_live(plan))
		return CUDNN_STATUS_BAD_PARAM; /* a descriptor it was made from is gone */
	graph_conv c;
	cudnnStatus_t st = conv_op(plan->graph->op, &c);
	if (st == CUDNN_STATUS_SUCCESS)
		st = bind(pack, &c.x);
	if (st == CUDNN_STATUS_SUCCESS)
		st = bind(pack, &c.w);
	if (st == CUDNN_STATUS_SUCCESS)
		st = bind(pack, &c.y);
	if (st != CUDNN_STATUS_SUCCESS)
		return st;
	void *ws = nullptr;
	one_value(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, &ws);
	if (plan->workspace && !is_device(ws, (size_t)plan->workspace))
		return CUDNN_STATUS_BAD_PARAM;
	const engine_info e = engine_of(c, plan->engine);
	const int dir = c.names->dir;
	const cudnnConvolutionStruct cv = c.cv;
	const operand x = c.x.o, w = c.w.o, y = c.y.o;
	const double alpha = c.alpha, beta = c.beta;
	const conv_numerics how{e.down_convert, e.nondeterministic};
	return submit(h->stream, [=]() { convolve(dir, cv, x, w, y, alpha, beta, how); }, "cuDNN") ==
		       cudaSuccess
		       ? CUDNN_STATUS_SUCCESS
		       : CUDNN_STATUS_EXECUTION_FAILED;
}

unsigned long mp_emu_cudnn_descriptors(void)
{
	LOCKED;
	return (unsigned long)graph_live.size() + (unsigned long)legacy_live;
}

} // extern "C"
