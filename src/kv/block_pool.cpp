#include "kv/block_pool.h"

#include <algorithm>

#include "core/error.h"

namespace farsight {

namespace {
uint64_t mix(uint64_t x) {  // splitmix64 finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
}  // namespace

uint64_t block_hash(uint64_t parent, std::span<const int32_t> tokens) {
    uint64_t h = mix(parent ^ 0x6a09e667f3bcc908ull);
    for (int32_t t : tokens) h = mix(h ^ static_cast<uint32_t>(t));
    h = mix(h ^ tokens.size());
    return h == 0 ? 1 : h;  // 0 is "no parent"
}

BlockPool::BlockPool(int64_t num_blocks)
    : refs_(static_cast<size_t>(num_blocks), 0), entries_(static_cast<size_t>(num_blocks)) {
    free_.reserve(static_cast<size_t>(num_blocks));
    for (int64_t i = num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

int32_t BlockPool::allocate() {
    int32_t b;
    if (!free_.empty()) {
        b = free_.back();
        free_.pop_back();
    } else {
        FS_CHECK(!lru_.empty(), "KV cache is full: all {} blocks are in use", num_blocks());
        b = lru_.front();
        lru_.pop_front();
        CacheEntry& e = entries_[static_cast<size_t>(b)];
        by_hash_.erase(e.hash);
        e = CacheEntry{};
        ++evicted_;
    }
    refs_[static_cast<size_t>(b)] = 1;
    return b;
}

void BlockPool::add_ref(int32_t block) {
    FS_CHECK(refs_.at(static_cast<size_t>(block)) > 0, "add_ref on free KV block {}", block);
    ++refs_[static_cast<size_t>(block)];
}

void BlockPool::release(int32_t block) {
    int32_t& r = refs_.at(static_cast<size_t>(block));
    FS_CHECK(r > 0, "release of free KV block {}", block);
    if (--r > 0) return;
    CacheEntry& e = entries_[static_cast<size_t>(block)];
    if (e.valid) {
        lru_.push_back(block);
        e.lru_pos = std::prev(lru_.end());
        e.in_lru = true;
    } else {
        free_.push_back(block);
    }
}

bool BlockPool::register_block(int32_t block, uint64_t parent, std::span<const int32_t> tokens) {
    FS_CHECK(refs_.at(static_cast<size_t>(block)) > 0, "register_block on free KV block {}", block);
    CacheEntry& e = entries_[static_cast<size_t>(block)];
    if (e.valid) return false;
    const uint64_t h = block_hash(parent, tokens);
    if (by_hash_.count(h)) return false;
    e.valid = true;
    e.hash = h;
    e.parent = parent;
    e.tokens.assign(tokens.begin(), tokens.end());
    by_hash_.emplace(h, block);
    return true;
}

std::optional<int32_t> BlockPool::acquire_cached(uint64_t parent, std::span<const int32_t> tokens) {
    const auto it = by_hash_.find(block_hash(parent, tokens));
    if (it == by_hash_.end()) return std::nullopt;
    const int32_t b = it->second;
    CacheEntry& e = entries_[static_cast<size_t>(b)];
    if (e.parent != parent ||
        !std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin(), tokens.end()))
        return std::nullopt;  // a hash collision
    int32_t& r = refs_[static_cast<size_t>(b)];
    if (r == 0) {
        lru_.erase(e.lru_pos);
        e.in_lru = false;
    }
    ++r;
    return b;
}

std::optional<uint64_t> BlockPool::hash_of(int32_t block) const {
    const CacheEntry& e = entries_.at(static_cast<size_t>(block));
    if (!e.valid) return std::nullopt;
    return e.hash;
}

void BlockTable::reserve(BlockPool& pool, int64_t n_tokens, int64_t block_size) {
    const int64_t need = (n_tokens + block_size - 1) / block_size;
    while (static_cast<int64_t>(blocks_.size()) < need) blocks_.push_back(pool.allocate());
}

void BlockTable::release(BlockPool& pool) {
    for (int32_t b : blocks_) pool.release(b);
    blocks_.clear();
    num_cached_ = 0;
}

}  // namespace farsight
