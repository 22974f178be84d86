#include "model/arch.h"

namespace farsight {

namespace {
const ArchSpec* const kArchs[] = {&kLlamaArch, &kMistralArch, &kQwen2Arch};
}

const ArchSpec* find_arch(const std::string& architecture) {
    for (const ArchSpec* a : kArchs)
        if (architecture == a->name) return a;
    return nullptr;
}

std::vector<std::string> supported_architectures() {
    std::vector<std::string> v;
    for (const ArchSpec* a : kArchs) v.emplace_back(a->name);
    return v;
}

}  // namespace farsight
