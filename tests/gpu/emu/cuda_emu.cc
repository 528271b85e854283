/* cuda_emu.cc — see cuda_emu.h. */
#include "tests/gpu/emu/cuda_emu.h"

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

emu_uint3 emu_threadIdx, emu_blockIdx;
dim3 emu_blockDim, emu_gridDim;

/* ---- coroutines ----------------------------------------------------------- */

extern "C" void emu_switch(void **save_sp, void *load_sp);
__asm__(".text\n"
        ".globl emu_switch\n"
        ".type emu_switch,@function\n"
        "emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size emu_switch, .-emu_switch\n");

enum { T_READY, T_WAIT_WARP, T_WAIT_BLOCK, T_DONE };
#define EMU_STACK (256 * 1024)

struct emu_thread {
    void *sp;
    int state;
    char *stack;
};

/* Thread stacks live for the process; freed at exit so leak checkers stay quiet. */
struct emu_thread_vec : std::vector<emu_thread> {
    ~emu_thread_vec() { for (auto &t : *this) free(t.stack); }
};
static emu_thread_vec g_thr;
static void *g_sched_sp;
static int g_cur, g_n;
static const std::function<void()> *g_fn;
static std::vector<float> g_warp_f;
static std::vector<int> g_warp_i;
static std::vector<unsigned char> g_dyn;
static cudaError_t g_last_err = cudaSuccess;
static uint64_t g_launches;

static void set_idx(int t)
{
    emu_threadIdx.x = (unsigned)t % emu_blockDim.x;
    emu_threadIdx.y = ((unsigned)t / emu_blockDim.x) % emu_blockDim.y;
    emu_threadIdx.z = (unsigned)t / (emu_blockDim.x * emu_blockDim.y);
}

__attribute__((noinline, used)) static void emu_trampoline(void)
{
    (*g_fn)();
    g_thr[g_cur].state = T_DONE;
    emu_switch(&g_thr[g_cur].sp, g_sched_sp);
    abort(); /* never resumed */
}

static void thread_start(emu_thread *t)
{
    char *top = t->stack + EMU_STACK;
    top = (char *)((uintptr_t)top & ~(uintptr_t)15);
    void **sp = (void **)top;
    *--sp = NULL;                       /* fake return address of the trampoline */
    *--sp = (void *)emu_trampoline;     /* `ret` of emu_switch lands here */
    for (int i = 0; i < 6; i++) *--sp = NULL; /* rbp rbx r12-r15 */
    t->sp = sp;
    t->state = T_READY;
}

static void block_wait(int state)
{
    g_thr[g_cur].state = state;
    emu_switch(&g_thr[g_cur].sp, g_sched_sp);
}

void __syncthreads(void) { block_wait(T_WAIT_BLOCK); }

float __shfl_xor_sync(unsigned mask, float v, int o)
{
    (void)mask;
    int t = g_cur, base = t & ~31;
    g_warp_f[t] = v;
    block_wait(T_WAIT_WARP);
    int src = base + ((t & 31) ^ o);
    float r = src < g_n ? g_warp_f[src] : v;
    block_wait(T_WAIT_WARP);
    return r;
}

int __shfl_xor_sync(unsigned mask, int v, int o)
{
    (void)mask;
    int t = g_cur, base = t & ~31;
    g_warp_i[t] = v;
    block_wait(T_WAIT_WARP);
    int src = base + ((t & 31) ^ o);
    int r = src < g_n ? g_warp_i[src] : v;
    block_wait(T_WAIT_WARP);
    return r;
}

void *emu_dyn_shared(void) { return g_dyn.data(); }

/* ---- ordering: random block and thread order, poisoned shared memory ------- */

extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));
static uint64_t g_rng;
static std::vector<int> g_order;

static uint64_t rng_next(void)
{
    if (!g_rng) {
        const char *s = getenv("EMOE_EMU_SEED");
        g_rng = s && *s ? strtoull(s, NULL, 10) * 0x9E3779B97F4A7C15ULL + 1 : 0x2545F4914F6CDD1DULL;
        if (s && *s) fprintf(stderr, "cuda_emu: EMOE_EMU_SEED=%s\n", s);
    }
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return g_rng;
}

static void shuffle(std::vector<int> &v, int n)
{
    v.resize((size_t)n);
    for (int i = 0; i < n; i++) v[(size_t)i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_next() % (uint64_t)(i + 1));
        int t = v[(size_t)i]; v[(size_t)i] = v[(size_t)j]; v[(size_t)j] = t;
    }
}

/* Shared memory holds garbage when a block starts. (GCC's ASan adds no
 * redzones to globals in a named section, so the section is one range.) */
static void poison_shared(void)
{
    char *a = __start_emu_shared, *b = __stop_emu_shared;
    if (a && b > a)
        memset(a, 0xFF, (size_t)(b - a));
    memset(g_dyn.data(), 0xFF, g_dyn.size());
}

static void run_block(int n)
{
    poison_shared();
    for (int t = 0; t < n; t++) thread_start(&g_thr[t]);
    int live = n;
    while (live > 0) {
        int progressed = 0;
        shuffle(g_order, n);
        for (int i = 0; i < n; i++) {
            int t = g_order[(size_t)i];
            if (g_thr[t].state != T_READY) continue;
            g_cur = t;
            set_idx(t);
            emu_switch(&g_sched_sp, g_thr[t].sp);
            progressed = 1;
            if (g_thr[t].state == T_DONE) live--;
        }
        /* Release complete warp barriers, then a complete block barrier. */
        for (int w = 0; w < n; w += 32) {
            int hi = w + 32 < n ? w + 32 : n, waiting = 0, alive = 0;
            for (int t = w; t < hi; t++) {
                if (g_thr[t].state == T_DONE) continue;
                alive++;
                waiting += g_thr[t].state == T_WAIT_WARP;
            }
            if (alive && waiting == alive) {
                for (int t = w; t < hi; t++) if (g_thr[t].state == T_WAIT_WARP) g_thr[t].state = T_READY;
                progressed = 1;
            }
        }
        int at_block = 0;
        for (int t = 0; t < n; t++) at_block += g_thr[t].state == T_WAIT_BLOCK;
        if (live && at_block == live) {
            for (int t = 0; t < n; t++) if (g_thr[t].state == T_WAIT_BLOCK) g_thr[t].state = T_READY;
            progressed = 1;
        }
        if (!progressed && live) {
            fprintf(stderr, "cuda_emu: deadlock in block (%u,%u,%u): %d threads live, %d at __syncthreads, the rest at warp shuffles\n",
                    emu_blockIdx.x, emu_blockIdx.y, emu_blockIdx.z, live, at_block);
            abort();
        }
    }
}

static bool launch_config_ok(dim3 grid, dim3 block, size_t shmem)
{
    uint64_t nthr = (uint64_t)block.x * block.y * block.z;
    if (nthr == 0 || nthr > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u ||
        grid.y > 65535 || grid.z > 65535 || shmem > 48 * 1024) {
        g_last_err = cudaErrorInvalidConfiguration;
        return false;
    }
    return true;
}

void emu_launch(dim3 grid, dim3 block, size_t shmem, const std::function<void()> &fn)
{
    if (!launch_config_ok(grid, block, shmem)) return;
    uint64_t nthr = (uint64_t)block.x * block.y * block.z;
    g_launches++;
    size_t old = g_thr.size();
    if (old < nthr) {
        g_thr.resize(nthr);
        for (size_t i = old; i < nthr; i++) {
            g_thr[i].stack = (char *)malloc(EMU_STACK);
            if (!g_thr[i].stack) { fprintf(stderr, "cuda_emu: out of memory for stacks\n"); abort(); }
        }
    }
    g_n = (int)nthr;
    g_warp_f.assign(g_thr.size() + 32, 0.0f);
    g_warp_i.assign(g_thr.size() + 32, 0);
    g_dyn.assign(shmem ? shmem : 1, 0xFF); /* uninitialised shared memory reads as garbage */
    g_fn = &fn;
    emu_blockDim = block;
    emu_gridDim = grid;
    /* Blocks in a random order (a kernel must not depend on it). */
    uint64_t nb = (uint64_t)grid.x * grid.y * grid.z;
    std::vector<uint64_t> ord(nb);
    for (uint64_t i = 0; i < nb; i++) ord[i] = i;
    for (uint64_t i = nb; i > 1; i--) {
        uint64_t j = rng_next() % i, t = ord[i - 1];
        ord[i - 1] = ord[j];
        ord[j] = t;
    }
    for (uint64_t b : ord) {
        emu_blockIdx.x = (unsigned)(b % grid.x);
        emu_blockIdx.y = (unsigned)((b / grid.x) % grid.y);
        emu_blockIdx.z = (unsigned)(b / ((uint64_t)grid.x * grid.y));
        run_block(g_n);
    }
}

uint64_t emu_launch_count(void) { return g_launches; }

/* ---- runtime ---------------------------------------------------------------- */

static int g_fail_after;
void emu_fail_malloc_after(int n) { g_fail_after = n; }

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    }
    return "unknown error";
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    }
    return "cudaErrorUnknown";
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = g_last_err;
    g_last_err = cudaSuccess;
    return e;
}

cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
    if (dev != 0) return cudaErrorInvalidValue;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "emoe CUDA emulator (CPU)");
    p->major = 9;
    p->minor = 0;
    p->totalGlobalMem = (size_t)16 << 30;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) { *f = (size_t)8 << 30; *t = (size_t)16 << 30; return cudaSuccess; }

cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = NULL;
    if (g_fail_after > 0 && --g_fail_after == 0) return cudaErrorMemoryAllocation;
    void *q = NULL;
    if (posix_memalign(&q, 256, n ? n : 1)) return cudaErrorMemoryAllocation;
    memset(q, 0xCD, n); /* device memory starts as garbage */
    *p = q;
    return cudaSuccess;
}
/* ---- streams and events: deferred per-stream queues ------------------------------
 * Work queued on a stream (launches, async copies, cuBLAS calls, event waits)
 * runs only when the host demands it (stream/event/device synchronisation, a
 * synchronous copy, a free) and then only as far as demanded: a consumer that
 * forgot to wait for a producer on another stream runs before it, and a
 * producer (a copy into a slot) runs before queued readers of the old
 * contents unless it waits for their event. Async copies from or to pinned
 * memory (cudaMallocHost, cudaHostRegister) read/write it when they run;
 * from pageable memory they snapshot the source at the call (H2D) or are
 * synchronous (D2H), as CUDA does. EMOE_EMU_SYNC=1: everything immediate. One
 * recursive mutex serialises the emulator between host threads. */

struct emu_op { std::function<void()> fn; };
struct emu_stream {
    std::deque<emu_op> q;
    uint64_t enq = 0, done = 0;
    bool blocking = true;
    bool capturing = false, cap_invalid = false; /* stream capture (graphs) */
    std::vector<std::function<void()>> cap;
};
struct emu_graph { std::vector<std::function<void()>> ops; };
static uint64_t g_graph_launches;
static uint64_t g_pageable_h2d; /* bytes of async H2D copies from pageable memory (an extra staging copy in CUDA) */
uint64_t emu_pageable_h2d_bytes(void) { return g_pageable_h2d; }
struct emu_event {
    emu_stream *s = nullptr;
    uint64_t seq = 0;
};

static std::recursive_mutex g_mu;
/* Destroyed streams stay allocated (drained) so events recorded on them stay
 * valid, as in CUDA; freed at exit. */
static struct emu_dead_streams {
    std::vector<emu_stream *> v;
    ~emu_dead_streams() { for (emu_stream *s : v) delete s; }
} g_dead;
static std::set<emu_stream *> g_streams;
static std::map<uintptr_t, size_t> g_pinned;
static int g_sync_mode = -1;

static bool sync_mode(void)
{
    if (g_sync_mode < 0) {
        const char *s = getenv("EMOE_EMU_SYNC");
        g_sync_mode = s && *s == '1';
    }
    return g_sync_mode == 1;
}

static bool is_pinned(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    auto it = g_pinned.upper_bound(a);
    if (it == g_pinned.begin()) return false;
    --it;
    return a >= it->first && a + n <= it->first + it->second;
}

static void drain_to(emu_stream *s, uint64_t seq)
{
    while (s->done < seq && !s->q.empty()) {
        emu_op op = std::move(s->q.front());
        s->q.pop_front();
        op.fn();
        s->done++;
    }
}
static void drain(emu_stream *s) { drain_to(s, s->enq); }
static void drain_all(bool blocking_only)
{
    for (bool again = true; again;) {
        again = false;
        for (emu_stream *s : g_streams)
            if ((!blocking_only || s->blocking) && s->done < s->enq) { drain(s); again = true; }
    }
}

/* Queues fn on s (NULL: the legacy default stream, which waits for the
 * blocking streams and runs now). */
static void enqueue(emu_stream *s, std::function<void()> fn)
{
    if (s && s->capturing) { /* recorded into the graph, not run */
        s->cap.push_back(std::move(fn));
        return;
    }
    if (!s || sync_mode()) {
        if (!s) drain_all(true);
        fn();
        return;
    }
    s->q.push_back(emu_op{std::move(fn)});
    s->enq++;
}

void emu_launch_on(cudaStream_t s, dim3 grid, dim3 block, size_t shmem, std::function<void()> fn)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!launch_config_ok(grid, block, shmem)) return;
    enqueue(s, [grid, block, shmem, fn]() { emu_launch(grid, block, shmem, fn); });
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    *p = NULL;
    if (g_fail_after > 0 && --g_fail_after == 0) return cudaErrorMemoryAllocation;
    void *q = NULL;
    if (posix_memalign(&q, 4096, n ? n : 1)) return cudaErrorMemoryAllocation; /* page-aligned, as CUDA's */
    memset(q, 0xCD, n);
    *p = q;
    g_pinned[(uintptr_t)*p] = n ? n : 1;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    drain_all(false); /* cudaFree synchronises the device */
    free(p);
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    drain_all(false);
    g_pinned.erase((uintptr_t)p);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaHostRegister(void *p, size_t n, unsigned)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!p || !n) return cudaErrorInvalidValue;
    g_pinned[(uintptr_t)p] = n;
    return cudaSuccess;
}
cudaError_t cudaHostUnregister(void *p)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!p || !g_pinned.erase((uintptr_t)p)) return cudaErrorInvalidValue;
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    drain_all(true); /* the legacy default stream */
    if (n) memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!n) return cudaSuccess;
    if (st && st->capturing && ((k == cudaMemcpyHostToDevice && !is_pinned(s, n)) || (k == cudaMemcpyDeviceToHost && !is_pinned(d, n)))) {
        st->cap_invalid = true; /* a graph cannot copy pageable memory */
        return cudaErrorStreamCaptureUnsupported;
    }
    if (k == cudaMemcpyHostToDevice && !is_pinned(s, n)) {
        /* pageable source: staged at the call, the caller may reuse it */
        g_pageable_h2d += n;
        std::shared_ptr<std::vector<unsigned char>> snap(new std::vector<unsigned char>((const unsigned char *)s, (const unsigned char *)s + n));
        enqueue(st, [d, snap]() { memcpy(d, snap->data(), snap->size()); });
    } else if (k == cudaMemcpyDeviceToHost && !is_pinned(d, n)) {
        /* pageable destination: synchronous */
        if (st) drain(st); else drain_all(true);
        memmove(d, s, n);
    } else {
        enqueue(st, [d, s, n]() { memmove(d, s, n); });
    }
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t n)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    drain_all(true);
    memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    drain_all(false);
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    *s = new emu_stream();
    g_streams.insert(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    cudaError_t e = cudaStreamCreate(s);
    if (e == cudaSuccess) (*s)->blocking = !(flags & cudaStreamNonBlocking);
    return e;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!s) return cudaErrorInvalidValue;
    drain(s); /* queued work completes */
    g_streams.erase(s);
    g_dead.v.push_back(s);
    return cudaSuccess;
}
static cudaError_t refuse_in_capture(emu_stream *s)
{
    s->cap_invalid = true;
    return cudaErrorStreamCaptureUnsupported;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (s && s->capturing) return refuse_in_capture(s);
    if (s) drain(s); else drain_all(true);
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!e) return cudaErrorInvalidValue;
    if (s && s->capturing) return refuse_in_capture(s);
    emu_stream *es = e->s;
    uint64_t seq = e->seq; /* the record current at the call */
    if (es) enqueue(s, [es, seq]() { drain_to(es, seq); });
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { *e = new emu_event(); return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { std::lock_guard<std::recursive_mutex> lk(g_mu); delete e; return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!e) return cudaErrorInvalidValue;
    if (s && s->capturing) return refuse_in_capture(s);
    if (!s || sync_mode()) { if (!s) drain_all(true); e->s = nullptr; e->seq = 0; return cudaSuccess; }
    e->s = s;
    e->seq = s->enq; /* complete once s has run everything queued so far */
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!e) return cudaErrorInvalidValue;
    if (e->s) drain_to(e->s, e->seq);
    return cudaSuccess;
}

/* ---- stream capture and graphs ------------------------------------------------ */

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!s || s->capturing) return cudaErrorInvalidValue; /* the legacy stream cannot capture */
    s->capturing = true;
    s->cap_invalid = false;
    s->cap.clear();
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    *g = nullptr;
    if (!s || !s->capturing) return cudaErrorInvalidValue;
    s->capturing = false;
    std::vector<std::function<void()>> ops;
    ops.swap(s->cap);
    if (s->cap_invalid) return cudaErrorStreamCaptureInvalidated;
    *g = new emu_graph{std::move(ops)};
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!g) return cudaErrorInvalidValue;
    *x = new emu_graph{g->ops};
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    if (!x || (s && s->capturing)) return cudaErrorInvalidValue;
    g_graph_launches++;
    for (auto &op : x->ops) enqueue(s, op);
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete g; return cudaSuccess; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) { delete x; return cudaSuccess; }
uint64_t emu_graph_launch_count(void) { return g_graph_launches; }

/* ---- cuBLAS -------------------------------------------------------------------- */

struct emu_blas { cudaStream_t s = nullptr; };
cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = new emu_blas(); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy(cublasHandle_t h) { delete h; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->s = s;
    return CUBLAS_STATUS_SUCCESS;
}

static float ld(const void *p, cudaDataType t, size_t i)
{
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    return __uint_as_float(u);
}

static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float a, const void *A, cudaDataType at,
                 int lda, const void *B, cudaDataType bt, int ldb, float b, void *C, int ldc);

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t comp,
                            cublasGemmAlgo_t)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (comp != CUBLAS_COMPUTE_32F || ct != CUDA_R_32F || at != bt) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m < 0 || n < 0 || k < 0 || lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m)
        return CUBLAS_STATUS_INVALID_VALUE;
    float a = *(const float *)alpha, b = *(const float *)beta; /* host pointer mode: read at the call */
    std::lock_guard<std::recursive_mutex> lk(g_mu);
    enqueue(h->s, [=]() { gemm(ta, tb, m, n, k, a, A, at, lda, B, bt, ldb, b, C, ldc); });
    return CUBLAS_STATUS_SUCCESS;
}

static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float a, const void *A, cudaDataType at,
                 int lda, const void *B, cudaDataType bt, int ldb, float b, void *C, int ldc)
{
    float *c = (float *)C;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float s = 0;
            for (int p = 0; p < k; p++) {
                float av = ta == CUBLAS_OP_N ? ld(A, at, (size_t)p * lda + i) : ld(A, at, (size_t)i * lda + p);
                float bv = tb == CUBLAS_OP_N ? ld(B, bt, (size_t)j * ldb + p) : ld(B, bt, (size_t)p * ldb + j);
                s += av * bv;
            }
            float *cc = c + (size_t)j * ldc + i;
            *cc = a * s + (b != 0.0f ? b * *cc : 0.0f);
        }
}

const char *cublasGetStatusName(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}
const char *cublasGetStatusString(cublasStatus_t s) { return cublasGetStatusName(s); }
