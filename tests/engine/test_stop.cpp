#include <gtest/gtest.h>

#include "engine/stop.h"

using namespace farsight;

// Feed pieces, collect what is emitted.
static std::string run(StopMatcher& m, const std::vector<std::string>& pieces, std::vector<std::string>* emitted = nullptr) {
    std::string out;
    for (const auto& p : pieces) {
        std::string e = m.push(p);
        if (emitted) emitted->push_back(e);
        out += e;
        if (m.stopped()) return out;
    }
    return out + m.flush();
}

TEST(StopMatcher, SpanningTokenBoundaries) {
    StopMatcher m({"\n\nUser:"});
    std::vector<std::string> em;
    EXPECT_EQ(run(m, {"Hello", " there", "\n", "\nUs", "er:", " more"}, &em), "Hello there");
    EXPECT_TRUE(m.stopped());
    // the "\n" and "\nUs" pieces were held back, never streamed
    EXPECT_EQ(em[2], "");
    EXPECT_EQ(em[3], "");
}

TEST(StopMatcher, HeldTextReleasedWhenDisambiguated) {
    StopMatcher m({"END"});
    std::vector<std::string> em;
    EXPECT_EQ(run(m, {"the E", "ND", "x"}, &em), "the ");
    StopMatcher m2({"END"});
    em.clear();
    EXPECT_EQ(run(m2, {"the E", "Nx", "!"}, &em), "the ENx!");
    EXPECT_EQ(em[0], "the ");  // "E" held
    EXPECT_EQ(em[1], "ENx");   // released once it cannot be "END"
    EXPECT_FALSE(m2.stopped());
}

TEST(StopMatcher, EarliestOfSeveralStops) {
    StopMatcher m({"cat", "at the"});
    EXPECT_EQ(run(m, {"look at the cat"}), "look ");
}

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
    StopMatcher m({});
    std::vector<std::string> em;
    EXPECT_EQ(run(m, {"a", "b"}, &em), "ab");
    EXPECT_EQ(em[0], "a");
}
