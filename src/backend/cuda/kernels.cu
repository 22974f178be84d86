// Element-wise and per-row kernels: conversions, embedding, RMSNorm, RoPE, SiLU*up, gathers,
// KV-cache stores.
#include <algorithm>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"

namespace farsight::cuda {
namespace {

template <typename F>
void dispatch_act(DType dt, F&& f) {
    switch (dt) {
        case DType::BF16:
            f(__nv_bfloat16{});
            break;
        case DType::F16:
            f(__half{});
            break;
        default:
            fail("CUDA backend: activation dtype {} is not supported (use bf16 or f16)",
                 dtype_name(dt));
    }
}
template <typename F>
void dispatch_any(DType dt, F&& f) {
    switch (dt) {
        case DType::BF16:
            f(__nv_bfloat16{});
            break;
        case DType::F16:
            f(__half{});
            break;
        case DType::F32:
            f(float{});
            break;
        default:
            fail("CUDA backend: dtype {} is not supported here (use f32, f16 or bf16)",
                 dtype_name(dt));
    }
}

template <typename S, typename D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, size_t n) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
         i += size_t(gridDim.x) * blockDim.x)
        dst[i] = from_f<D>(to_f(src[i]));
}

__device__ __forceinline__ uint64_t splitmix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

template <typename T>
__global__ void fill_random_kernel(T* dst, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
         i += size_t(gridDim.x) * blockDim.x) {
        uint64_t r = splitmix(seed * 0x100000001b3ull + i);
        float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // [0,1)
        dst[i] = from_f<T>((2.0f * u - 1.0f) * scale);
    }
}

template <typename T, typename W>
__global__ void embedding_kernel(const W* __restrict__ table, int64_t vocab, int64_t dim,
                                 const int32_t* __restrict__ tokens, T* __restrict__ out) {
    pdl_trigger();
    pdl_wait();
    int64_t t = blockIdx.x;
    int32_t tok = tokens[t];
    T* o = out + t * dim;
    if (tok < 0 || tok >= vocab) {  // the host validates ids; never read out of bounds
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = from_f<T>(0.0f);
        return;
    }
    const W* row = table + static_cast<int64_t>(tok) * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = from_f<T>(to_f(row[i]));
}

__device__ __forceinline__ float block_sum(float v, float* red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    int nw = blockDim.x / 32;
    float s = 0.0f;
    for (int i = 0; i < nw; ++i) s += red[i];
    __syncthreads();
    return s;
}

// out = w * (x * rsqrt(mean(x^2) + eps)).to(T); with residual: residual = R(residual + x) first
// and the norm is taken of the new residual. R is the residual stream's type (T, as transformers
// keeps it, or float); without a residual, x is of type R.
template <typename T, typename W, typename R>
__global__ void rmsnorm_kernel(const void* __restrict__ xin, const W* __restrict__ w, float eps,
                               T* __restrict__ out, R* residual, int64_t cols) {
    pdl_trigger();
    pdl_wait();
    __shared__ float red[32];
    int64_t r = blockIdx.x;
    T* orow = out + r * cols;
    const R* src;
    float ss = 0.0f;
    if (residual) {
        const T* xr = static_cast<const T*>(xin) + r * cols;
        R* rr = residual + r * cols;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
            R v = from_f<R>(to_f(rr[i]) + to_f(xr[i]));
            rr[i] = v;
            float f = to_f(v);
            ss += f * f;
        }
        src = rr;  // each thread re-reads only the elements it wrote itself
    } else {
        src = static_cast<const R*>(xin) + r * cols;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
            float f = to_f(src[i]);
            ss += f * f;
        }
    }
    float total = block_sum(ss, red);
    float inv = rsqrtf(total / static_cast<float>(cols) + eps);
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
        float h = round_to<T>(to_f(src[i]) * inv);
        orow[i] = from_f<T>(to_f(w[i]) * h);
    }
}

// V elements of type T as one aligned access (V = 8 x 2 bytes: one 16-byte load or store).
template <typename T, int V>
struct alignas(sizeof(T) * V) VecT {
    T v[V];
};

// 8 consecutive elements as floats: one 16-byte access for 2-byte types, two for f32.
template <typename U>
__device__ __forceinline__ void load8(const U* p, float (&f)[8]) {
    if constexpr (sizeof(U) == 4) {
        const float4 a = reinterpret_cast<const float4*>(p)[0];
        const float4 b = reinterpret_cast<const float4*>(p)[1];
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
        f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
    } else {
        const VecT<U, 8> v = *reinterpret_cast<const VecT<U, 8>*>(p);
#pragma unroll
        for (int e = 0; e < 8; ++e) f[e] = to_f(v.v[e]);
    }
}
template <typename U>
__device__ __forceinline__ void store8(U* p, const float (&f)[8]) {
    if constexpr (sizeof(U) == 4) {
        reinterpret_cast<float4*>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
        reinterpret_cast<float4*>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
    } else {
        VecT<U, 8> v;
#pragma unroll
        for (int e = 0; e < 8; ++e) v.v[e] = from_f<U>(f[e]);
        *reinterpret_cast<VecT<U, 8>*>(p) = v;
    }
}

// rmsnorm_kernel with 8-element vector accesses (cols % 8 == 0, 16-byte aligned rows): thread i
// handles the 8-element chunks i, i + blockDim, ... (at most NV of them), keeping its row
// elements in registers between the sum of squares and the output (no re-read). The same
// arithmetic per element as rmsnorm_kernel; the sum of squares adds in another order.
template <typename T, typename W, typename R, int NV>
__global__ void __launch_bounds__(1024)
    rmsnorm_vec_kernel(const void* __restrict__ xin, const W* __restrict__ w, float eps,
                       T* __restrict__ out, R* residual, int64_t cols) {
    pdl_trigger();
    pdl_wait();
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    const int nvec = static_cast<int>(cols / 8);
    float v[NV][8];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
        const int c = threadIdx.x + k * blockDim.x;
        if (c >= nvec) break;
        const int64_t off = r * cols + static_cast<int64_t>(c) * 8;
        if (residual) {
            float x8[8];
            load8(static_cast<const T*>(xin) + off, x8);
            load8(residual + off, v[k]);
#pragma unroll
            for (int e = 0; e < 8; ++e) v[k][e] = round_to<R>(v[k][e] + x8[e]);
            store8(residual + off, v[k]);
        } else {
            load8(static_cast<const R*>(xin) + off, v[k]);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) ss += v[k][e] * v[k][e];
    }
    const float total = block_sum(ss, red);
    const float inv = rsqrtf(total / static_cast<float>(cols) + eps);
#pragma unroll
    for (int k = 0; k < NV; ++k) {
        const int c = threadIdx.x + k * blockDim.x;
        if (c >= nvec) break;
        float w8[8], o8[8];
        load8(w + static_cast<int64_t>(c) * 8, w8);
#pragma unroll
        for (int e = 0; e < 8; ++e) o8[e] = w8[e] * round_to<T>(v[k][e] * inv);
        store8(out + r * cols + static_cast<int64_t>(c) * 8, o8);
    }
}

// transformers: cos/sin = (cos(pos*inv_freq) * scaling).to(T); x*cos + rotate_half(x)*sin, each
// product and the sum rounded to T.
template <typename T>
__global__ void rope_kernel(T* qkv, int64_t ld, int64_t n_heads, int64_t head_dim, int64_t half,
                            DevMeta m) {
    pdl_trigger();
    pdl_wait();
    int64_t t = blockIdx.x;
    int32_t s = m.token_seq[t];
    int32_t var = m.seqs[s].rope_variant;
    const float* inv = m.inv_freq + m.rope_offset[var];
    float scaling = m.rope_scaling[var];
    float pos = static_cast<float>(m.positions[t]);
    T* row = qkv + t * ld;
    for (int64_t idx = threadIdx.x; idx < n_heads * half; idx += blockDim.x) {
        int64_t h = idx / half, i = idx % half;
        float angle = __fmul_rn(pos, inv[i]);
        float sn, cs;
        sincosf(angle, &sn, &cs);
        float c = round_to<T>(cs * scaling), sv = round_to<T>(sn * scaling);
        T* x = row + h * head_dim;
        float a = to_f(x[i]), b = to_f(x[i + half]);
        float na = round_to<T>(a * c) + round_to<T>(-b * sv);
        float nb = round_to<T>(b * c) + round_to<T>(a * sv);
        x[i] = from_f<T>(na);
        x[i + half] = from_f<T>(nb);
    }
}

// Geometry of one rope_store launch, per token: rope units (a chunk of V rotary pairs of G
// consecutive q/k heads) first, then copy units (V elements of a v head, then V elements of a
// k head beyond the rotary dims).
struct RopeStoreGeom {
    int64_t ld;  // qkv row stride (elements)
    int H, KVH, D, half;
    int nch;         // half / V: chunks per rotated head
    int rope_units;  // ceil((H + KVH) / G) * nch
    int v_units;     // KVH * D / V
    int tail;        // (D - 2 * half) / V: copy units per k head beyond the rotary dims
    int per_tok;     // rope_units + v_units + KVH * tail
    int blocks_per_tok;
};

// rope_kernel and kv_store_kernel in one: rotates the q and k heads of each token in place
// (the same arithmetic and roundings as rope_kernel) and writes the rotated k heads and the v
// heads into the paged pools at meta.slot_mapping (slot < 0: rotate, store nothing). Block b
// serves token b / blocks_per_tok. V = 8 takes 16-byte accesses (half % 8 == 0, D % 8 == 0,
// aligned rows and pools), V = 1 is the element fallback (any even rotary dims). Each rope
// thread computes the cos/sin of its V frequencies once and applies them to G heads.
template <typename T, int V, int G>
__global__ void __launch_bounds__(128)
    rope_store_kernel(T* __restrict__ qkv, RopeStoreGeom g, DevMeta m, T* __restrict__ k_pool,
                      T* __restrict__ v_pool) {
    pdl_trigger();
    pdl_wait();
    using Vec = VecT<T, V>;
    const int t = blockIdx.x / g.blocks_per_tok;
    const int r = (blockIdx.x % g.blocks_per_tok) * blockDim.x + threadIdx.x;
    if (r >= g.per_tok) return;
    const int64_t slot = m.slot_mapping[t];
    const int64_t kv_row = static_cast<int64_t>(g.KVH) * g.D;  // elements per pool slot
    T* row = qkv + t * g.ld;
    if (r < g.rope_units) {
        const int hg = r / g.nch, i0 = (r % g.nch) * V;
        const int nrh = g.H + g.KVH;
        // all loads first, before the (dependent) metadata loads and the cos/sin: the stores of
        // one head cannot be proven apart from the next head's loads, so an interleaved loop
        // would wait for memory once per head
        Vec av[G], bv[G];
#pragma unroll
        for (int j = 0; j < G; ++j) {
            const int h = hg * G + j;
            if (h < nrh) {
                const T* x = row + static_cast<int64_t>(h) * g.D;
                av[j] = *reinterpret_cast<const Vec*>(x + i0);
                bv[j] = *reinterpret_cast<const Vec*>(x + i0 + g.half);
            }
        }
        const int32_t s = m.token_seq[t];
        const int32_t var = m.seqs[s].rope_variant;
        const float* inv = m.inv_freq + m.rope_offset[var];
        const float scaling = m.rope_scaling[var];
        const float pos = static_cast<float>(m.positions[t]);
        float c[V], sv[V];
#pragma unroll
        for (int e = 0; e < V; ++e) {
            const float angle = __fmul_rn(pos, inv[i0 + e]);
            float sn, cs;
            sincosf(angle, &sn, &cs);
            c[e] = round_to<T>(cs * scaling);
            sv[e] = round_to<T>(sn * scaling);
        }
#pragma unroll
        for (int j = 0; j < G; ++j) {
            const int h = hg * G + j;
            if (h >= nrh) break;
            Vec na, nb;
#pragma unroll
            for (int e = 0; e < V; ++e) {
                const float a = to_f(av[j].v[e]), b = to_f(bv[j].v[e]);
                na.v[e] = from_f<T>(round_to<T>(a * c[e]) + round_to<T>(-b * sv[e]));
                nb.v[e] = from_f<T>(round_to<T>(b * c[e]) + round_to<T>(a * sv[e]));
            }
            T* x = row + static_cast<int64_t>(h) * g.D;
            *reinterpret_cast<Vec*>(x + i0) = na;
            *reinterpret_cast<Vec*>(x + i0 + g.half) = nb;
            if (h >= g.H && slot >= 0) {
                T* kp = k_pool + slot * kv_row + static_cast<int64_t>(h - g.H) * g.D;
                *reinterpret_cast<Vec*>(kp + i0) = na;
                *reinterpret_cast<Vec*>(kp + i0 + g.half) = nb;
            }
        }
        return;
    }
    if (slot < 0) return;  // padding token: nothing to store
    int u = r - g.rope_units;
    const T* k = row + static_cast<int64_t>(g.H) * g.D;
    if (u < g.v_units) {  // v: element j of the token's v heads
        const int64_t j = static_cast<int64_t>(u) * V;
        *reinterpret_cast<Vec*>(v_pool + slot * kv_row + j) =
            *reinterpret_cast<const Vec*>(k + kv_row + j);
        return;
    }
    u -= g.v_units;  // k beyond the rotary dims (partial rotary)
    const int kh = u / g.tail;
    const int64_t j = static_cast<int64_t>(kh) * g.D + 2 * g.half + (u % g.tail) * V;
    *reinterpret_cast<Vec*>(k_pool + slot * kv_row + j) = *reinterpret_cast<const Vec*>(k + j);
}

// transformers: act_fn(gate) is stored in T, then multiplied by up in T.
// The same, 8 elements per thread with 16-byte loads and stores (I % 8 == 0, aligned rows):
// the prefill shapes (8K tokens x 11008) are bandwidth-bound.
template <typename T>
__global__ void silu_mul_vec_kernel(const uint4* __restrict__ gu, uint4* __restrict__ out,
                                    int64_t T_, int64_t I8) {
    pdl_trigger();
    pdl_wait();
    const size_t n = static_cast<size_t>(T_) * I8;
    for (size_t idx = blockIdx.x * size_t(blockDim.x) + threadIdx.x; idx < n;
         idx += size_t(gridDim.x) * blockDim.x) {
        const size_t t = idx / I8, c = idx % I8;
        const uint4 g4 = gu[t * 2 * I8 + c], u4 = gu[t * 2 * I8 + I8 + c];
        const T* g = reinterpret_cast<const T*>(&g4);
        const T* u = reinterpret_cast<const T*>(&u4);
        uint4 o4;
        T* o = reinterpret_cast<T*>(&o4);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float gf = to_f(g[i]);
            const float sg = round_to<T>(gf / (1.0f + expf(-gf)));
            o[i] = from_f<T>(sg * to_f(u[i]));
        }
        out[idx] = o4;
    }
}
template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gu, T* __restrict__ out, int64_t T_,
                                int64_t I) {
    pdl_trigger();
    pdl_wait();
    size_t n = static_cast<size_t>(T_) * I;
    for (size_t idx = blockIdx.x * size_t(blockDim.x) + threadIdx.x; idx < n;
         idx += size_t(gridDim.x) * blockDim.x) {
        size_t t = idx / I, i = idx % I;
        float g = to_f(gu[t * 2 * I + i]);
        float u = to_f(gu[t * 2 * I + I + i]);
        float sg = round_to<T>(g / (1.0f + expf(-g)));
        out[idx] = from_f<T>(sg * u);
    }
}

__global__ void gather_rows_kernel(const char* __restrict__ x, size_t row_bytes,
                                   const int32_t* __restrict__ rows, char* __restrict__ out) {
    pdl_trigger();
    pdl_wait();
    int64_t i = blockIdx.x;
    const char* src = x + static_cast<size_t>(rows[i]) * row_bytes;
    char* dst = out + static_cast<size_t>(i) * row_bytes;
    if (row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
        reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
        for (size_t j = threadIdx.x; j < row_bytes / 16; j += blockDim.x)
            reinterpret_cast<uint4*>(dst)[j] = reinterpret_cast<const uint4*>(src)[j];
    } else {
        for (size_t j = threadIdx.x; j < row_bytes; j += blockDim.x) dst[j] = src[j];
    }
}

template <typename T>
__global__ void kv_store_kernel(const T* __restrict__ qkv, int64_t ld, int64_t H, int64_t KVH,
                                int64_t D, const int32_t* __restrict__ slots, T* k_pool,
                                T* v_pool) {
    pdl_trigger();
    pdl_wait();
    int64_t t = blockIdx.x;
    int64_t slot = slots[t];
    if (slot < 0) return;  // padding token: nothing to store
    const T* k = qkv + t * ld + H * D;
    const T* v = k + KVH * D;
    int64_t n = KVH * D;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
        k_pool[slot * n + j] = k[j];
        v_pool[slot * n + j] = v[j];
    }
}

unsigned grid_for(size_t n, unsigned block) {
    size_t g = (n + block - 1) / block;
    if (g > 65535u * 8u) g = 65535u * 8u;
    return static_cast<unsigned>(g < 1 ? 1 : g);
}

}  // namespace

void launch_convert(DType src_dt, const void* src, DType dst_dt, void* dst, size_t n,
                    cudaStream_t st) {
    if (n == 0) return;
    dispatch_any(src_dt, [&](auto s) {
        dispatch_any(dst_dt, [&](auto d) {
            using S = decltype(s);
            using D = decltype(d);
            convert_kernel<S, D><<<grid_for(n, 256), 256, 0, st>>>(static_cast<const S*>(src),
                                                                   static_cast<D*>(dst), n);
        });
    });
    FS_CUDA_LAUNCH("convert_kernel");
}

void launch_fill_random(DType dt, void* dst, size_t n, uint64_t seed, float scale,
                        cudaStream_t st) {
    if (n == 0) return;
    dispatch_any(dt, [&](auto z) {
        using T = decltype(z);
        fill_random_kernel<T>
            <<<grid_for(n, 256), 256, 0, st>>>(static_cast<T*>(dst), n, seed, scale);
    });
    FS_CUDA_LAUNCH("fill_random_kernel");
}

void launch_embedding(DType dt, DType table_dt, const void* table, int64_t vocab, int64_t dim,
                      const int32_t* tokens, int64_t T, void* out, cudaStream_t st) {
    if (T == 0) return;
    dispatch_any(dt, [&](auto a) {  // dt: the residual stream's type (f32, bf16 or f16)
        dispatch_any(table_dt, [&](auto w) {
            using A = decltype(a);
            using W = decltype(w);
            launch_pdl(embedding_kernel<A, W>, dim3(static_cast<unsigned>(T)), dim3(256), 0, st,
                       "embedding_kernel", static_cast<const W*>(table), vocab, dim, tokens,
                       static_cast<A*>(out));
        });
    });
    FS_CUDA_LAUNCH("embedding_kernel");
}

void launch_rmsnorm(DType dt, DType w_dt, DType res_dt, const void* x, const void* w, float eps,
                    void* out, void* residual, int64_t rows, int64_t cols, cudaStream_t st) {
    if (rows == 0) return;
    auto al16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    // Vector path: up to 4 chunks of 8 per thread, at most 512 threads (cols <= 16384). The
    // choice depends on cols and alignment, not on the rows, so a row's result does not depend
    // on the batch.
    const int64_t nvec = cols / 8;
    const bool vec = cols % 8 == 0 && nvec <= 4 * 512 && al16(x) && al16(w) && al16(out) &&
                     (residual == nullptr || al16(residual));
    const int nv = nvec <= 512 ? 1 : (nvec <= 1024 ? 2 : 4);
    const int vthreads = static_cast<int>(std::max<int64_t>(32, (ceil_div(nvec, nv) + 31) / 32 * 32));
    int threads = cols >= 1024 ? 512 : (cols >= 256 ? 256 : 64);
    dispatch_act(dt, [&](auto a) {
        dispatch_any(w_dt, [&](auto ww) {
            using A = decltype(a);
            using W = decltype(ww);
            auto run = [&](auto rz) {
                using R = decltype(rz);
                const dim3 grid(static_cast<unsigned>(rows));
                auto args = [&](auto kernel, int th, const char* what) {
                    launch_pdl(kernel, grid, dim3(th), 0, st, what, x, static_cast<const W*>(w),
                               eps, static_cast<A*>(out), static_cast<R*>(residual), cols);
                };
                if (!vec)
                    args(rmsnorm_kernel<A, W, R>, threads, "rmsnorm_kernel");
                else if (nv == 1)
                    args(rmsnorm_vec_kernel<A, W, R, 1>, vthreads, "rmsnorm_vec_kernel");
                else if (nv == 2)
                    args(rmsnorm_vec_kernel<A, W, R, 2>, vthreads, "rmsnorm_vec_kernel");
                else
                    args(rmsnorm_vec_kernel<A, W, R, 4>, vthreads, "rmsnorm_vec_kernel");
            };
            if (res_dt == DType::F32) run(float{});
            else run(A{});
        });
    });
    FS_CUDA_LAUNCH("rmsnorm_kernel");
}

void launch_rope(DType dt, void* qkv, int64_t T, int64_t ld, int64_t n_rot_heads, int64_t head_dim,
                 int64_t half, const DevMeta& m, cudaStream_t st) {
    if (T == 0 || half == 0) return;
    int64_t work = n_rot_heads * half;
    int threads = work >= 512 ? 512 : (work >= 128 ? 128 : 32);
    dispatch_act(dt, [&](auto a) {
        using A = decltype(a);
        launch_pdl(rope_kernel<A>, dim3(static_cast<unsigned>(T)), dim3(threads), 0, st,
                   "rope_kernel", static_cast<A*>(qkv), ld, n_rot_heads, head_dim, half, m);
    });
    FS_CUDA_LAUNCH("rope_kernel");
}

void launch_rope_store(DType dt, void* qkv, int64_t T, int64_t ld, int64_t H, int64_t KVH,
                       int64_t D, int64_t half, const DevMeta& m, void* k_pool, void* v_pool,
                       int num_sms, cudaStream_t st) {
    if (T == 0) return;
    auto al16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    const bool vec = half % 8 == 0 && D % 8 == 0 && ld % 8 == 0 && al16(qkv) && al16(k_pool) &&
                     al16(v_pool);
    const int V = vec ? 8 : 1;
    const int64_t nrh = H + KVH;
    // One head per rope thread while that leaves the device short of threads (decode), else
    // 2 heads sharing one cos/sin computation (prefill; 4 took 117 registers in bf16).
    const int64_t nch = half / V;
    const int G = T * ((nrh + 1) / 2) * nch >= static_cast<int64_t>(num_sms) * 512 ? 2 : 1;
    RopeStoreGeom g{};
    g.ld = ld;
    g.H = static_cast<int>(H);
    g.KVH = static_cast<int>(KVH);
    g.D = static_cast<int>(D);
    g.half = static_cast<int>(half);
    g.nch = static_cast<int>(nch);
    g.rope_units = static_cast<int>((nrh + G - 1) / G * nch);
    g.v_units = static_cast<int>(KVH * D / V);
    g.tail = static_cast<int>((D - 2 * half) / V);
    g.per_tok = g.rope_units + g.v_units + g.KVH * g.tail;
    constexpr int kThreads = 128;
    g.blocks_per_tok = static_cast<int>(ceil_div(static_cast<size_t>(g.per_tok), kThreads));
    FS_CHECK(T * g.blocks_per_tok <= 0x7fffffff, "rope_store: {} tokens make too many blocks", T);
    const dim3 grid(static_cast<unsigned>(T * g.blocks_per_tok));
    dispatch_act(dt, [&](auto a) {
        using A = decltype(a);
        auto run = [&](auto kernel) {
            launch_pdl(kernel, grid, dim3(kThreads), 0, st, "rope_store_kernel",
                       static_cast<A*>(qkv), g, m, static_cast<A*>(k_pool),
                       static_cast<A*>(v_pool));
        };
        if (vec) {
            if (G == 2) run(rope_store_kernel<A, 8, 2>);
            else run(rope_store_kernel<A, 8, 1>);
        } else {
            if (G == 2) run(rope_store_kernel<A, 1, 2>);
            else run(rope_store_kernel<A, 1, 1>);
        }
    });
    FS_CUDA_LAUNCH("rope_store_kernel");
}

void launch_silu_mul(DType dt, const void* gate_up, void* out, int64_t T, int64_t I,
                     cudaStream_t st) {
    size_t n = static_cast<size_t>(T) * I;
    if (n == 0) return;
    dispatch_act(dt, [&](auto a) {
        using A = decltype(a);
        const bool vec = I % 8 == 0 && reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(out) % 16 == 0;
        if (vec)
            launch_pdl(silu_mul_vec_kernel<A>, dim3(grid_for(n / 8, 256)), dim3(256), 0, st,
                       "silu_mul_vec_kernel", static_cast<const uint4*>(gate_up),
                       static_cast<uint4*>(out), T, I / 8);
        else
            launch_pdl(silu_mul_kernel<A>, dim3(grid_for(n, 256)), dim3(256), 0, st,
                       "silu_mul_kernel", static_cast<const A*>(gate_up), static_cast<A*>(out), T,
                       I);
    });
    FS_CUDA_LAUNCH("silu_mul_kernel");
}

void launch_gather_rows(const void* x, size_t row_bytes, const int32_t* rows, int64_t n, void* out,
                        cudaStream_t st) {
    if (n == 0) return;
    launch_pdl(gather_rows_kernel, dim3(static_cast<unsigned>(n)), dim3(128), 0, st,
               "gather_rows_kernel", static_cast<const char*>(x), row_bytes, rows,
               static_cast<char*>(out));
    FS_CUDA_LAUNCH("gather_rows_kernel");
}

void launch_kv_store(DType dt, const void* qkv, int64_t T, int64_t ld, int64_t H, int64_t KVH,
                     int64_t D, const int32_t* slots, void* k_pool, void* v_pool, cudaStream_t st) {
    if (T == 0) return;
    dispatch_act(dt, [&](auto a) {
        using A = decltype(a);
        launch_pdl(kv_store_kernel<A>, dim3(static_cast<unsigned>(T)), dim3(256), 0, st,
                   "kv_store_kernel", static_cast<const A*>(qkv), ld, H, KVH, D, slots,
                   static_cast<A*>(k_pool), static_cast<A*>(v_pool));
    });
    FS_CUDA_LAUNCH("kv_store_kernel");
}

}  // namespace farsight::cuda
