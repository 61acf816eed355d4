#include "runtime/logging.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>

#include <spdlog/sinks/stdout_sinks.h>

namespace hive::log {

namespace {

std::mutex init_mtx;
std::string node_name_storage = "-";
std::atomic<const std::string*> node_name_ptr{&node_name_storage};
std::atomic<uint64_t> error_count{0};

std::shared_ptr<spdlog::logger> make_logger() {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("hive", sink);
  logger->set_pattern("%v");
  logger->set_level(spdlog::level::info);
  logger->flush_on(spdlog::level::trace);
  return logger;
}

spdlog::logger& logger() {
  static auto instance = make_logger();
  return *instance;
}

std::string iso_now() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto secs = time_point_cast<seconds>(now);
  auto ms = duration_cast<milliseconds>(now - secs).count();
  std::time_t t = system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms));
  return buf;
}

} // namespace

void init(std::string node_name, std::string_view level) {
  std::lock_guard<std::mutex> guard{init_mtx};
  // Names are set once per process in practice; keep old strings alive for racing readers.
  static std::vector<std::unique_ptr<std::string>> names;
  names.push_back(std::make_unique<std::string>(std::move(node_name)));
  node_name_ptr.store(names.back().get());
  logger().set_level(spdlog::level::from_str(std::string{level}));
}

bool enabled(spdlog::level::level_enum lvl) noexcept {
  return logger().should_log(lvl);
}

void event(spdlog::level::level_enum lvl, std::string_view name, const nlohmann::json& fields,
           std::string_view actor, uint64_t correlation_id) {
  if (lvl >= spdlog::level::err)
    error_count.fetch_add(1, std::memory_order_relaxed);
  if (!logger().should_log(lvl))
    return;
  nlohmann::ordered_json line;
  line["ts"] = iso_now();
  auto lv = spdlog::level::to_string_view(lvl);
  line["level"] = std::string{lv.data(), lv.size()};
  line["node"] = *node_name_ptr.load();
  line["event"] = std::string{name};
  if (!actor.empty())
    line["actor"] = std::string{actor};
  if (correlation_id != 0)
    line["cid"] = format_cid(correlation_id);
  if (fields.is_object())
    for (auto& [k, v] : fields.items())
      line[k] = v;
  logger().log(lvl, "{}", line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

uint64_t error_lines() noexcept {
  return error_count.load(std::memory_order_relaxed);
}

std::string format_cid(uint64_t cid) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(cid));
  return buf;
}

} // namespace hive::log
