// open_safetensors_folder: single-file and sharded folders, the real shared models, and the
// folder-level errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "io/safetensors.h"
#include "io_test_util.h"

using namespace farsight;
using namespace farsight::testing;
using nlohmann::json;

namespace {

const fs::path kShared = FARSIGHT_SHARED_DIR;

json read_json(const fs::path& p) {
    return json::parse(read_file(p));
}

// Independent minimal reading of a safetensors header, straight from the file bytes.
struct RawEntry {
    std::string dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
};
std::map<std::string, RawEntry> raw_header(std::ifstream& in, uint64_t* data_start) {
    unsigned char len[8];
    in.read(reinterpret_cast<char*>(len), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    *data_start = 8 + n;
    std::string text(n, '\0');
    in.read(text.data(), static_cast<std::streamsize>(n));
    std::map<std::string, RawEntry> out;
    const json header = json::parse(text);
    for (auto& [k, v] : header.items()) {
        if (k == "__metadata__") continue;
        out[k] = {v["dtype"], v["shape"].get<std::vector<int64_t>>(), v["data_offsets"][0],
                  v["data_offsets"][1]};
    }
    return out;
}

// Checks every tensor of `src` that comes from file `p` against the raw header and bytes.
size_t check_against_raw(const WeightSource& src, const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    uint64_t data_start = 0;
    const auto raw = raw_header(in, &data_start);
    const std::map<std::string, DType> dt = {{"F32", DType::F32}, {"BF16", DType::BF16}};
    std::string buf;
    for (const auto& [name, e] : raw) {
        const TensorInfo* t = src.find(name);
        if (t == nullptr) {
            ADD_FAILURE() << name << " missing";
            continue;
        }
        EXPECT_EQ(t->file, p.string()) << name;
        EXPECT_EQ(t->shape, e.shape) << name;
        EXPECT_EQ(t->dtype, dt.at(e.dtype)) << name;
        if (t->nbytes != e.end - e.begin) {
            ADD_FAILURE() << name << ": nbytes " << t->nbytes << " vs " << e.end - e.begin;
            continue;
        }
        buf.resize(t->nbytes);
        in.seekg(static_cast<std::streamoff>(data_start + e.begin));
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        if (!in) {
            ADD_FAILURE() << name << ": cannot read its bytes from " << p;
            return raw.size();
        }
        EXPECT_EQ(std::memcmp(t->data, buf.data(), t->nbytes), 0) << name;
    }
    return raw.size();
}

// Builds a two-shard folder: shard 1 holds x (F32 [2]), shard 2 holds y (BF16 [3]) and z.
void make_sharded(const fs::path& dir, const json& weight_map) {
    write_file(dir / "s1.safetensors",
               safetensors_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                 raw_bytes(std::vector<float>{0.5f, -7.0f})));
    write_file(dir / "s2.safetensors",
               safetensors_bytes(R"({"y":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},)"
                                 R"("z":{"dtype":"F32","shape":[1],"data_offsets":[6,10]}})",
                                 raw_bytes(std::vector<uint16_t>{0x3f80, 0x4000, 0xc040}) +
                                     raw_bytes(std::vector<float>{42.0f})));
    write_file(dir / "model.safetensors.index.json",
               json{{"metadata", {{"total_size", 18}}}, {"weight_map", weight_map}}.dump());
}

const json kGoodMap = {{"x", "s1.safetensors"}, {"y", "s2.safetensors"}, {"z", "s2.safetensors"}};

}  // namespace

TEST(WeightSource, Stories260KSingleFile) {
    const fs::path dir = kShared / "models" / "stories260K";
    const json cfg = read_json(dir / "config.json");
    auto src = open_safetensors_folder(dir);
    const size_t n = check_against_raw(*src, dir / "model.safetensors");
    EXPECT_EQ(src->names().size(), n);
    const int64_t hidden = cfg["hidden_size"], vocab = cfg["vocab_size"],
                  layers = cfg["num_hidden_layers"], heads = cfg["num_attention_heads"],
                  kv = cfg["num_key_value_heads"], inter = cfg["intermediate_size"];
    const int64_t hd = hidden / heads;
    // 9 tensors per layer + embed + final norm + lm_head (untied).
    EXPECT_EQ(static_cast<int64_t>(n), 9 * layers + 3);
    EXPECT_EQ(src->get("model.embed_tokens.weight").shape, (std::vector<int64_t>{vocab, hidden}));
    EXPECT_EQ(src->get("lm_head.weight").shape, (std::vector<int64_t>{vocab, hidden}));
    EXPECT_EQ(src->get("model.layers.0.self_attn.q_proj.weight").shape,
              (std::vector<int64_t>{heads * hd, hidden}));
    EXPECT_EQ(src->get("model.layers.4.self_attn.k_proj.weight").shape,
              (std::vector<int64_t>{kv * hd, hidden}));
    EXPECT_EQ(src->get("model.layers.2.mlp.gate_proj.weight").shape,
              (std::vector<int64_t>{inter, hidden}));
    EXPECT_EQ(src->get("model.norm.weight").dtype, DType::F32);
    EXPECT_NE(src->describe().find("stories260K"), std::string::npos);
}

TEST(WeightSource, Docs27MShardedBf16) {
    const fs::path dir = kShared / "models" / "docs-27M";
    const json cfg = read_json(dir / "config.json");
    const json idx = read_json(dir / "model.safetensors.index.json");
    auto src = open_safetensors_folder(dir);

    std::set<std::string> shards;
    for (auto& [t, s] : idx["weight_map"].items()) shards.insert(s.get<std::string>());
    ASSERT_EQ(shards.size(), 4u);
    size_t total = 0;
    for (const auto& s : shards) total += check_against_raw(*src, dir / s);
    EXPECT_EQ(total, idx["weight_map"].size());
    EXPECT_EQ(src->names().size(), idx["weight_map"].size());

    // Every tensor comes from the shard the index names, and sizes add up to total_size.
    uint64_t bytes = 0;
    for (const auto& name : src->names()) {
        const TensorInfo& t = src->get(name);
        EXPECT_EQ(fs::path(t.file).filename().string(), idx["weight_map"][name].get<std::string>());
        EXPECT_EQ(t.dtype, DType::BF16) << name;
        bytes += t.nbytes;
    }
    EXPECT_EQ(bytes, idx["metadata"]["total_size"].get<uint64_t>());

    const int64_t hidden = cfg["hidden_size"], vocab = cfg["vocab_size"],
                  layers = cfg["num_hidden_layers"], hd = cfg["head_dim"],
                  kv = cfg["num_key_value_heads"], heads = cfg["num_attention_heads"];
    EXPECT_EQ(static_cast<int64_t>(src->names().size()), 9 * layers + 2);  // tied: no lm_head
    EXPECT_EQ(src->find("lm_head.weight"), nullptr);
    EXPECT_EQ(src->get("model.embed_tokens.weight").shape, (std::vector<int64_t>{vocab, hidden}));
    EXPECT_EQ(src->get("model.layers.7.self_attn.k_proj.weight").shape,
              (std::vector<int64_t>{kv * hd, hidden}));
    EXPECT_EQ(src->get("model.layers.3.self_attn.o_proj.weight").shape,
              (std::vector<int64_t>{hidden, heads * hd}));
    expect_error([&] { src->get("lm_head.weight"); },
                 {"tensor 'lm_head.weight' not found in", dir.string()});
}

TEST(WeightSource, HandBuiltShardedFolder) {
    TempDir dir;
    make_sharded(dir.path(), kGoodMap);
    auto src = open_safetensors_folder(dir.path());
    EXPECT_EQ(src->names(), (std::vector<std::string>{"x", "y", "z"}));
    const TensorInfo& x = src->get("x");
    float xv[2];
    std::memcpy(xv, x.data, 8);
    EXPECT_EQ(xv[0], 0.5f);
    EXPECT_EQ(xv[1], -7.0f);
    const TensorInfo& y = src->get("y");
    EXPECT_EQ(y.dtype, DType::BF16);
    std::vector<float> yv(3);
    convert_to_f32(DType::BF16, y.data, yv.data(), 3);
    EXPECT_EQ(yv, (std::vector<float>{1.0f, 2.0f, -3.0f}));
    float z;
    std::memcpy(&z, src->get("z").data, 4);
    EXPECT_EQ(z, 42.0f);
    EXPECT_EQ(fs::path(src->get("z").file).filename(), "s2.safetensors");
}

TEST(WeightSource, IndexTakesPrecedenceOverSingleFile) {
    TempDir dir;
    make_sharded(dir.path(), kGoodMap);
    write_file(dir / "model.safetensors", "garbage");  // would fail if it were opened
    EXPECT_EQ(open_safetensors_folder(dir.path())->names().size(), 3u);
}

TEST(WeightSource, MissingTensorNamesTensorAndSource) {
    TempDir dir;
    write_file(dir / "model.safetensors",
               safetensors_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                 std::string(4, '\x01')));
    auto src = open_safetensors_folder(dir.path());
    EXPECT_NE(src->find("w"), nullptr);
    expect_error([&] { src->get("model.norm.weight"); },
                 {"tensor 'model.norm.weight' not found in", (dir / "model.safetensors").string()});
}

TEST(WeightSource, EmptyFolder) {
    TempDir dir;
    expect_error([&] { open_safetensors_folder(dir.path()); },
                 {"no model.safetensors or model.safetensors.index.json in", dir.path().string()});
}

TEST(WeightSource, PytorchCheckpointNotSupported) {
    TempDir dir;
    write_file(dir / "pytorch_model.bin", "PK");
    expect_error([&] { open_safetensors_folder(dir.path()); },
                 {"no model.safetensors", dir.path().string(), "PyTorch .bin", "not supported"});
}

TEST(WeightSource, OtherSafetensorsNameIsNotPickedUp) {
    TempDir dir;
    write_file(dir / "weights.safetensors", safetensors_bytes("{}", ""));
    expect_error([&] { open_safetensors_folder(dir.path()); }, {"no model.safetensors"});
}

TEST(WeightSource, FolderMissingOrAFile) {
    TempDir dir;
    expect_error([&] { open_safetensors_folder(dir / "nope"); },
                 {(dir / "nope").string(), "does not exist"});
    write_file(dir / "f", "x");
    expect_error([&] { open_safetensors_folder(dir / "f"); },
                 {(dir / "f").string(), "is not a folder"});
}

TEST(WeightSource, ShardMissing) {
    TempDir dir;
    json m = kGoodMap;
    m["z"] = "s3.safetensors";
    make_sharded(dir.path(), m);
    expect_error([&] { open_safetensors_folder(dir.path()); },
                 {"shard 's3.safetensors'", "tensor 'z'", "missing"});
}

TEST(WeightSource, TensorNotInItsShard) {
    TempDir dir;
    json m = kGoodMap;
    m["y"] = "s1.safetensors";
    make_sharded(dir.path(), m);
    expect_error([&] { open_safetensors_folder(dir.path()); },
                 {"tensor 'y'", "shard 's1.safetensors'", "does not contain it"});
}

TEST(WeightSource, BadIndexFiles) {
    TempDir dir;
    make_sharded(dir.path(), kGoodMap);
    const fs::path idx = dir / "model.safetensors.index.json";
    write_file(idx, "{\"weight_map\": ");
    expect_error([&] { open_safetensors_folder(dir.path()); }, {idx.string(), "not valid JSON"});
    write_file(idx, R"({"metadata": {}})");
    expect_error([&] { open_safetensors_folder(dir.path()); }, {idx.string(), "weight_map"});
    write_file(idx, R"({"weight_map": {"x": 3}})");
    expect_error([&] { open_safetensors_folder(dir.path()); },
                 {idx.string(), "tensor 'x'", "not a string"});
    write_file(idx, R"({"weight_map": {}})");
    expect_error([&] { open_safetensors_folder(dir.path()); }, {idx.string(), "empty"});
    write_file(idx, R"({"weight_map": {"x": "../s1.safetensors"}})");
    expect_error([&] { open_safetensors_folder(dir.path()); },
                 {"'../s1.safetensors'", "plain file name"});
}

TEST(WeightSource, CorruptShardNamesShard) {
    TempDir dir;
    make_sharded(dir.path(), kGoodMap);
    std::string s2 = read_file(dir / "s2.safetensors");
    write_file(dir / "s2.safetensors", s2.substr(0, s2.size() - 3));
    expect_error([&] { open_safetensors_folder(dir.path()); },
                 {(dir / "s2.safetensors").string(), "truncated", "tensor 'z'"});
}
