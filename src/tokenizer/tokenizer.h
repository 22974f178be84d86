#pragma once
// Hugging Face tokenizer.json, natively: BPE model, normalizers, pre-tokenizers, post-processors,
// decoders and added tokens, matching the `tokenizers` library (and transformers' AutoTokenizer,
// which adds BOS/EOS handling from tokenizer_config.json).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace farsight {

namespace tok {
struct Impl;
}

class Tokenizer {
  public:
    // Loads dir/tokenizer.json plus, when present, dir/tokenizer_config.json (BOS/EOS strings,
    // add_bos_token/add_eos_token) and dir/generation_config.json (extra EOS ids).
    static Tokenizer from_folder(const std::filesystem::path& dir);
    // Loads a tokenizer.json alone; BOS is then the leading special token of the post-processor
    // template (if any) and EOS is guessed from common special-token names.
    static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
    // Same from in-memory JSON text (config_json may be empty). `origin` names it in errors.
    static Tokenizer from_json(std::string_view tokenizer_json, std::string_view config_json = {},
                               std::string_view origin = "<memory>");

    // Ill-formed UTF-8 in `text` is replaced by U+FFFD before encoding.
    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
    // Ids outside the vocabulary are skipped (like Hugging Face tokenizers).
    std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

    std::string id_to_piece(int32_t id) const;  // "" for an unknown id
    std::optional<int32_t> piece_to_id(std::string_view piece) const;
    int32_t vocab_size() const;  // 1 + the largest id (model vocabulary and added tokens)

    std::optional<int32_t> bos_id() const;
    std::vector<int32_t> eos_ids() const;  // eos_token first, then generation_config extras
    std::string bos_token() const;         // "" when there is none
    std::string eos_token() const;
    bool is_special(int32_t id) const;

  private:
    explicit Tokenizer(std::shared_ptr<const tok::Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const tok::Impl> impl_;  // immutable after load (but for an internal cache)
};

// Streaming decoder: feed ids one at a time. push() returns text that is complete, valid UTF-8
// and final; the concatenation of all returned pieces plus flush() equals decode(all ids).
class IncrementalDecoder {
  public:
    explicit IncrementalDecoder(const Tokenizer& tok, bool skip_special = false);
    std::string push(int32_t id);
    std::string flush();

  private:
    std::string emit(bool final);
    Tokenizer tok_;  // a cheap shared handle, so the decoder may outlive the caller's copy
    bool skip_special_;
    std::vector<int32_t> ids_;
    size_t prefix_ = 0;  // start of the window re-decoded for context
    size_t read_ = 0;    // ids before this have been emitted
};

}  // namespace farsight
