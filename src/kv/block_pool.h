#pragma once
// The paged KV cache's bookkeeping (host side): a pool of fixed-size blocks with reference
// counts, and per-sequence block tables. The storage itself belongs to the backend
// (Backend::init_kv); block ids index its pools.
//
// Prefix caching: a full block can be registered under a hash of its contents and of the chain
// of blocks before it (block_hash()). A later sequence with the same prefix takes the cached
// block (acquire_cached) instead of recomputing it. A cached block whose last reference is
// released stays reusable (it counts as free) until allocate() evicts it, least recently
// released first.
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace farsight {

// Hash of a full block: its parent's hash (0 for the first block) and its tokens.
uint64_t block_hash(uint64_t parent, std::span<const int32_t> tokens);

class BlockPool {
  public:
    explicit BlockPool(int64_t num_blocks = 0);
    int64_t num_blocks() const { return static_cast<int64_t>(refs_.size()); }
    // Blocks allocate() can hand out: never-used ones plus cached blocks nobody references.
    int64_t num_free() const { return static_cast<int64_t>(free_.size() + lru_.size()); }
    int64_t num_used() const { return num_blocks() - num_free(); }
    // Free blocks that still hold a cached prefix (a subset of num_free()).
    int64_t num_cached_free() const { return static_cast<int64_t>(lru_.size()); }
    int64_t num_cached() const { return static_cast<int64_t>(by_hash_.size()); }
    int64_t num_evicted() const { return evicted_; }
    // Takes a free block (refcount 1), evicting the least recently released cached block when
    // no uncached one is left. Throws Error when none is free.
    int32_t allocate();
    void add_ref(int32_t block);
    // Drops one reference; at zero the block becomes free (cached blocks stay findable).
    void release(int32_t block);
    int32_t ref_count(int32_t block) const { return refs_.at(static_cast<std::size_t>(block)); }

    // Registers a full, referenced block under (parent hash, tokens). Returns false (and changes
    // nothing) when that content is already cached in another block or the block has a hash.
    bool register_block(int32_t block, uint64_t parent, std::span<const int32_t> tokens);
    // The cached block holding exactly (parent hash, tokens), with a new reference; nullopt if
    // none.
    std::optional<int32_t> acquire_cached(uint64_t parent, std::span<const int32_t> tokens);
    // The hash a block is registered under (nullopt if none).
    std::optional<uint64_t> hash_of(int32_t block) const;

  private:
    struct CacheEntry {
        uint64_t hash = 0, parent = 0;
        std::vector<int32_t> tokens;  // kept to rule out hash collisions
        bool valid = false;
        std::list<int32_t>::iterator lru_pos;
        bool in_lru = false;
    };
    std::vector<int32_t> refs_;
    std::vector<int32_t> free_;  // LIFO, blocks without cached contents
    std::vector<CacheEntry> entries_;
    std::unordered_map<uint64_t, int32_t> by_hash_;
    std::list<int32_t> lru_;  // free cached blocks, least recently released first
    int64_t evicted_ = 0;
};

// A sequence's view of the cache: its block table and how many tokens are cached.
class BlockTable {
  public:
    const std::vector<int32_t>& blocks() const { return blocks_; }
    int64_t num_cached() const { return num_cached_; }
    // Make room for n_tokens in total (allocating blocks from pool as needed).
    void reserve(BlockPool& pool, int64_t n_tokens, int64_t block_size);
    // Appends a block the caller already holds a reference to (e.g. from acquire_cached).
    void append(int32_t block) { blocks_.push_back(block); }
    void set_cached(int64_t n) { num_cached_ = n; }
    // Cache slot (block * block_size + offset) of token position pos.
    int32_t slot(int64_t pos, int64_t block_size) const {
        return blocks_[static_cast<std::size_t>(pos / block_size)] *
                   static_cast<int32_t>(block_size) +
               static_cast<int32_t>(pos % block_size);
    }
    void release(BlockPool& pool);  // give every block back

  private:
    std::vector<int32_t> blocks_;
    int64_t num_cached_ = 0;
};

}  // namespace farsight
