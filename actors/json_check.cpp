#include "actors/json_check.hpp"

#include <exception>

#include <nlohmann/json.hpp>

#include "protocols/errc.hpp"

namespace hive {

namespace {

/// A SAX consumer that only checks a JSON text: syntax and nesting depth.
class json_checker final : public nlohmann::json_sax<nlohmann::json> {
public:
  explicit json_checker(size_t depth_max) : depth_max_(depth_max) {}

  bool null() override {
    return true;
  }
  bool boolean(bool) override {
    return true;
  }
  bool number_integer(number_integer_t) override {
    return true;
  }
  bool number_unsigned(number_unsigned_t) override {
    return true;
  }
  bool number_float(number_float_t, const string_t&) override {
    return true;
  }
  bool string(string_t&) override {
    return true;
  }
  bool binary(binary_t&) override {
    return true;
  }
  bool start_object(std::size_t) override {
    return push();
  }
  bool key(string_t&) override {
    return true;
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    return push();
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    syntax_error_ = ex.what();
    return false;
  }

  /// Set when the text nests deeper than allowed.
  bool too_deep = false;

  /// The parser's message when the text is not JSON.
  [[nodiscard]] const std::string& syntax_error() const noexcept {
    return syntax_error_;
  }

private:
  bool push() {
    if (++depth_ > depth_max_) {
      too_deep = true;
      return false;
    }
    return true;
  }

  size_t depth_max_;
  size_t depth_ = 0;
  std::string syntax_error_;
};

} // namespace

/// Checks that `text` is one JSON document nested at most `depth_max` deep. Errors:
/// invalid_argument (not JSON, naming the position), too_large (too deep).
caf::error check_json(const std::string& text, size_t depth_max) {
  if (text.empty())
    return make_error(errc::invalid_argument, "request body is empty; expected a JSON document");
  json_checker checker{depth_max};
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text, &checker, nlohmann::json::input_format_t::json, true);
  } catch (const std::exception& ex) {
    return make_error(errc::invalid_argument,
                      std::string{"request body is not valid JSON: "} + ex.what());
  }
  if (checker.too_deep)
    return make_error(errc::too_large,
                      "request body nests JSON deeper than gateway.json_depth_max ("
                        + std::to_string(depth_max) + " levels)");
  if (!ok)
    return make_error(errc::invalid_argument,
                      "request body is not valid JSON: " + checker.syntax_error());
  return {};
}

} // namespace hive
