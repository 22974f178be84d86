#include "kv/block_pool.h"

#include "core/error.h"

namespace farsight {

BlockPool::BlockPool(int64_t num_blocks) : refs_(static_cast<size_t>(num_blocks), 0) {
    free_.reserve(static_cast<size_t>(num_blocks));
    for (int64_t i = num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

int32_t BlockPool::allocate() {
    FS_CHECK(!free_.empty(), "KV cache is full: all {} blocks are in use", num_blocks());
    const int32_t b = free_.back();
    free_.pop_back();
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
    if (--r == 0) free_.push_back(block);
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
