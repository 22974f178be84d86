// BlockPool: reference counts and the prefix cache (hash chain, reuse, LRU eviction).
#include <gtest/gtest.h>

#include "core/error.h"
#include "kv/block_pool.h"

using namespace farsight;

TEST(BlockPool, RefcountsAndFreeList) {
    BlockPool p(3);
    const int32_t a = p.allocate(), b = p.allocate();
    EXPECT_NE(a, b);
    EXPECT_EQ(p.num_used(), 2);
    p.add_ref(a);
    EXPECT_EQ(p.ref_count(a), 2);
    p.release(a);
    EXPECT_EQ(p.num_used(), 2);
    p.release(a);
    p.release(b);
    EXPECT_EQ(p.num_used(), 0);
    EXPECT_THROW(p.release(b), Error);
    (void)p.allocate(), (void)p.allocate(), (void)p.allocate();
    EXPECT_THROW(p.allocate(), Error);
}

TEST(BlockPool, HashChainDependsOnParentAndTokens) {
    const std::vector<int32_t> t1{1, 2, 3, 4}, t2{1, 2, 3, 5};
    EXPECT_NE(block_hash(0, t1), block_hash(0, t2));
    EXPECT_NE(block_hash(0, t1), block_hash(block_hash(0, t2), t1));
    EXPECT_EQ(block_hash(7, t1), block_hash(7, t1));
}

TEST(BlockPool, CachedBlocksAreSharedAndSurviveRelease) {
    BlockPool p(4);
    const std::vector<int32_t> t1{1, 2, 3, 4}, t2{5, 6, 7, 8};
    const int32_t a = p.allocate(), b = p.allocate();
    ASSERT_TRUE(p.register_block(a, 0, t1));
    ASSERT_TRUE(p.register_block(b, block_hash(0, t1), t2));
    EXPECT_FALSE(p.register_block(b, 0, t1));  // already has a hash
    // Another sequence with the same prefix gets the same blocks, with a new reference.
    EXPECT_EQ(p.acquire_cached(0, t1), a);
    EXPECT_EQ(p.ref_count(a), 2);
    EXPECT_EQ(p.acquire_cached(block_hash(0, t1), t2), b);
    // Same tokens after a different parent: a miss.
    EXPECT_FALSE(p.acquire_cached(block_hash(0, t2), t2).has_value());
    EXPECT_FALSE(p.acquire_cached(0, t2).has_value());
    for (int i = 0; i < 2; ++i) p.release(a), p.release(b);
    // Free but still cached: counted as free, and found again.
    EXPECT_EQ(p.num_used(), 0);
    EXPECT_EQ(p.num_free(), 4);
    EXPECT_EQ(p.num_cached_free(), 2);
    EXPECT_EQ(p.acquire_cached(0, t1), a);
    EXPECT_EQ(p.num_cached_free(), 1);
    p.release(a);  // now b was released before a: b is the least recently used
    // Allocating past the uncached blocks evicts cached ones, least recently released first.
    const int32_t c = p.allocate(), d = p.allocate();
    EXPECT_NE(c, a);
    EXPECT_NE(d, b);
    EXPECT_EQ(p.allocate(), b);
    EXPECT_EQ(p.num_evicted(), 1);
    EXPECT_FALSE(p.acquire_cached(block_hash(0, t1), t2).has_value());
    EXPECT_EQ(p.acquire_cached(0, t1), a);  // still cached
    EXPECT_EQ(p.num_free(), 0);
    EXPECT_THROW(p.allocate(), Error);
}
