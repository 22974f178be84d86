#pragma once
// The paged KV cache's bookkeeping (host side): a pool of fixed-size blocks with reference
// counts, and per-sequence block tables. The storage itself belongs to the backend
// (Backend::init_kv); block ids index its pools.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace farsight {

class BlockPool {
public:
    explicit BlockPool(int64_t num_blocks = 0);
    int64_t num_blocks() const { return static_cast<int64_t>(refs_.size()); }
    int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
    int64_t num_used() const { return num_blocks() - num_free(); }
    // Takes a free block (refcount 1). Throws Error when none is free.
    int32_t allocate();
    void add_ref(int32_t block);
    // Drops one reference; the block returns to the free list at zero.
    void release(int32_t block);
    int32_t ref_count(int32_t block) const { return refs_.at(static_cast<std::size_t>(block)); }

private:
    std::vector<int32_t> refs_;
    std::vector<int32_t> free_;  // LIFO
};

// A sequence's view of the cache: its block table and how many tokens are cached.
class BlockTable {
public:
    const std::vector<int32_t>& blocks() const { return blocks_; }
    int64_t num_cached() const { return num_cached_; }
    // Make room for n_tokens in total (allocating blocks from pool as needed).
    void reserve(BlockPool& pool, int64_t n_tokens, int64_t block_size);
    void set_cached(int64_t n) { num_cached_ = n; }
    // Cache slot (block * block_size + offset) of token position pos.
    int32_t slot(int64_t pos, int64_t block_size) const {
        return blocks_[static_cast<std::size_t>(pos / block_size)] * static_cast<int32_t>(block_size) +
               static_cast<int32_t>(pos % block_size);
    }
    void release(BlockPool& pool);  // give every block back

private:
    std::vector<int32_t> blocks_;
    int64_t num_cached_ = 0;
};

}  // namespace farsight
