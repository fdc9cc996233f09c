// sparseflow tokenize: the ids a prompt becomes (BOS first, as generate --prompt does) and each
// token's text.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "cli/table.hpp"
#include "core/error.hpp"

namespace sf::cli {

namespace {

struct TokenizeOptions {
  std::string model, text;
  bool json = false;
};

// A token's bytes made printable: control characters escaped; a token that is not complete UTF-8
// on its own (a piece of a multi-byte character) shown as \xNN bytes.
std::string printable(const std::string& bytes) {
  Utf8Stream s;
  const bool valid = s.push(bytes) == bytes && s.finish().empty();
  std::string out;
  for (unsigned char c : bytes) {
    if (!valid)
      out += fmt::format("\\x{:02x}", c);
    else if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\r')
      out += "\\r";
    else if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out += char(c);
  }
  return out;
}

void run_tokenize(const TokenizeOptions& o) {
  auto model = model::Model::open(o.model);
  const auto tok = model_tokenizer(*model);
  const auto ids = tok.encode_with_bos(o.text, int32_t(model->config().bos_token_id));
  if (o.json) {
    nlohmann::ordered_json tokens = nlohmann::ordered_json::array();
    for (int32_t id : ids) tokens.push_back(tok.token_bytes(id));
    const nlohmann::ordered_json out = {{"ids", ids}, {"tokens", tokens}, {"count", ids.size()}};
    fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  Table table({"#", "id", "token"});
  table.align_left(0, false);
  table.align_left(2);
  for (size_t i = 0; i < ids.size(); ++i)
    table.add_row({std::to_string(i), std::to_string(ids[i]), printable(tok.token_bytes(ids[i]))});
  fmt::print("{}", table.str());
  fmt::print("{} tokens\n", ids.size());
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::App* cmd =
      app.add_subcommand("tokenize", "Show the token ids and pieces of a text (BOS first)");
  cmd->add_option("--model,-m", o->model,
                  "a .sf file, a GGUF file, or a Hugging Face checkpoint directory (OPT, Llama, "
                  "Mistral, Qwen2, GPT-2)")
      ->required();
  cmd->add_option("--text,-t", o->text, "the text to tokenize")->required();
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] { run_tokenize(*o); });
}

}  // namespace sf::cli
