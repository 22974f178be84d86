#pragma once
// Shared helpers of the CUDA backend: error checking and RAII owners of CUDA resources.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "core/error.h"

namespace farsight::cuda {

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* what, const char* file, int line) {
    fail("CUDA error {} ({}) in {} at {}:{}", cudaGetErrorName(e), cudaGetErrorString(e), what,
         file, line);
}
[[noreturn]] inline void cublas_fail(cublasStatus_t s, const char* what, const char* file,
                                     int line) {
    fail("cuBLAS error {} ({}) in {} at {}:{}", cublasLtGetStatusName(s),
         cublasLtGetStatusString(s), what, file, line);
}

#define FS_CUDA(call)                                                        \
    do {                                                                     \
        cudaError_t fs_err_ = (call);                                        \
        if (fs_err_ != cudaSuccess)                                          \
            ::farsight::cuda::cuda_fail(fs_err_, #call, __FILE__, __LINE__); \
    } while (0)

#define FS_CUBLAS(call)                                                       \
    do {                                                                      \
        cublasStatus_t fs_st_ = (call);                                       \
        if (fs_st_ != CUBLAS_STATUS_SUCCESS)                                  \
            ::farsight::cuda::cublas_fail(fs_st_, #call, __FILE__, __LINE__); \
    } while (0)

// After a kernel launch: catches bad launch configurations immediately.
#define FS_CUDA_LAUNCH(what)                                                \
    do {                                                                    \
        cudaError_t fs_err_ = cudaGetLastError();                           \
        if (fs_err_ != cudaSuccess)                                         \
            ::farsight::cuda::cuda_fail(fs_err_, what, __FILE__, __LINE__); \
    } while (0)

// Programmatic dependent launch (sm_90+). A kernel launched with launch_pdl() may start while
// the kernel before it in the stream is still running; it must call pdl_wait() before it reads
// anything an earlier kernel wrote or writes anything an earlier kernel reads (weights and
// other constant inputs may be read before). pdl_wait() returns once every earlier kernel has
// completed and its writes are visible (each kernel waits for its own predecessor, so the
// order is transitive). pdl_trigger() lets the next kernel start launching. Both are no-ops
// when the kernel was launched normally or on GPUs before sm_90.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Whether launch_pdl() asks for programmatic dependent launch (device 0 of compute capability
// >= 9, and FARSIGHT_PDL is not 0). Defined in cuda_backend.cu.
bool pdl_enabled();
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                const char* what, Args&&... args) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl_enabled() ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
    if (e != cudaSuccess) cuda_fail(e, what, __FILE__, __LINE__);
}

// Unique owner of a device allocation.
class DeviceBuffer {
  public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
        if (bytes) FS_CUDA(cudaMalloc(&ptr_, bytes));
    }
    ~DeviceBuffer() { reset(); }
    DeviceBuffer(DeviceBuffer&& o) noexcept
        : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        if (this != &o) {
            reset();
            ptr_ = std::exchange(o.ptr_, nullptr);
            bytes_ = std::exchange(o.bytes_, 0);
        }
        return *this;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    void reset() {
        if (ptr_) cudaFree(ptr_);  // errors at teardown cannot be acted on
        ptr_ = nullptr;
        bytes_ = 0;
    }
    // Grows (never shrinks) to at least `bytes`; contents are not kept.
    void ensure(size_t bytes) {
        if (bytes > bytes_) *this = DeviceBuffer(bytes + bytes / 2);
    }
    void* get() const { return ptr_; }
    template <typename U>
    U* as() const {
        return static_cast<U*>(ptr_);
    }
    size_t size() const { return bytes_; }

  private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

// Unique owner of page-locked host memory.
class PinnedBuffer {
  public:
    PinnedBuffer() = default;
    explicit PinnedBuffer(size_t bytes) : bytes_(bytes) {
        if (bytes) FS_CUDA(cudaMallocHost(&ptr_, bytes));
    }
    ~PinnedBuffer() { reset(); }
    PinnedBuffer(PinnedBuffer&& o) noexcept
        : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
        if (this != &o) {
            reset();
            ptr_ = std::exchange(o.ptr_, nullptr);
            bytes_ = std::exchange(o.bytes_, 0);
        }
        return *this;
    }
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;
    void reset() {
        if (ptr_) cudaFreeHost(ptr_);
        ptr_ = nullptr;
        bytes_ = 0;
    }
    void ensure(size_t bytes) {
        if (bytes > bytes_) *this = PinnedBuffer(bytes + bytes / 2);
    }
    void* get() const { return ptr_; }
    template <typename U>
    U* as() const {
        return static_cast<U*>(ptr_);
    }
    size_t size() const { return bytes_; }

  private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

class Stream {
  public:
    Stream() { FS_CUDA(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
    ~Stream() {
        if (s_) cudaStreamDestroy(s_);
    }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    cudaStream_t get() const { return s_; }

  private:
    cudaStream_t s_ = nullptr;
};

class Event {
  public:
    explicit Event(unsigned flags = cudaEventDefault) {
        FS_CUDA(cudaEventCreateWithFlags(&e_, flags));
    }
    ~Event() {
        if (e_) cudaEventDestroy(e_);
    }
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;
    cudaEvent_t get() const { return e_; }

  private:
    cudaEvent_t e_ = nullptr;
};

class LtHandle {
  public:
    LtHandle() { FS_CUBLAS(cublasLtCreate(&h_)); }
    ~LtHandle() {
        if (h_) cublasLtDestroy(h_);
    }
    LtHandle(const LtHandle&) = delete;
    LtHandle& operator=(const LtHandle&) = delete;
    cublasLtHandle_t get() const { return h_; }

  private:
    cublasLtHandle_t h_ = nullptr;
};

// ---- element conversions usable in kernels ----
__device__ __forceinline__ float to_f(float x) {
    return x;
}
__device__ __forceinline__ float to_f(__nv_bfloat16 x) {
    return __bfloat162float(x);
}
__device__ __forceinline__ float to_f(__half x) {
    return __half2float(x);
}
template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
    return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_f<__half>(float x) {
    return __float2half_rn(x);
}
// Round a float through T (what storing an intermediate in T does in PyTorch).
template <typename T>
__device__ __forceinline__ float round_to(float x) {
    return to_f(from_f<T>(x));
}

// ---- memory access helpers of the kernels ----
// 16 bytes of data that stays constant while the kernel runs, streamed past L1.
__device__ __forceinline__ uint4 ld_nc_stream(const void* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}
// The 8 elements of T in 16 bytes, as floats.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
    const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = to_f(e[i]);
}
// cp.async of 16 bytes to the shared-memory address `smem`; valid == false fills them with
// zeros and reads nothing.
__device__ __forceinline__ void cp_async16(uint32_t smem, const void* gmem, bool valid) {
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}
// Waits until at most N of this thread's cp.async groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
inline unsigned ceil_div(size_t a, size_t b) {
    return static_cast<unsigned>((a + b - 1) / b);
}

}  // namespace farsight::cuda
