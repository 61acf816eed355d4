// agent-bench gateway: asks through a real agent-node's gateway, over HTTP/1.1 keep-alive and
// over the binary protocol, at several connection counts (closed loop: each connection keeps
// one ask in flight, or `depth` in the pipelined binary runs), and at a fixed request rate
// (open loop: latency measured from when each request was due, so a slow answer delays the
// figures instead of hiding them). One client thread drives every connection with poll().

#include "bench/gateway_bench.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocols/client.hpp"
#include "protocols/wire.hpp"

namespace hive::bench {

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::duration;

[[noreturn]] void die(const std::string& what) {
  std::cerr << "agent-bench gateway: " << what << std::endl;
  std::exit(1);
}

double quantile(std::vector<double> xs, double q) {
  if (xs.empty())
    return 0;
  auto k = static_cast<size_t>(q * static_cast<double>(xs.size() - 1));
  std::nth_element(xs.begin(), xs.begin() + static_cast<long>(k), xs.end());
  return xs[k];
}

double median(std::vector<double> xs) {
  return quantile(std::move(xs), 0.5);
}

enum class proto { http, binary };

/// One client connection of the driver.
struct conn {
  int fd = -1;
  std::string out;
  size_t out_off = 0;
  std::string in;
  size_t in_off = 0;
  /// HTTP: send times in order (answers come in order). Binary: by request id.
  std::deque<clock_type::time_point> sent_fifo;
  std::unordered_map<uint64_t, clock_type::time_point> sent_by_id;
  uint64_t next_id = 1;
  int in_flight = 0;
  uint64_t k = 0; // requests issued (picks the agent)
};

int connect_tcp(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    die(std::string{"socket: "} + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    die(std::string{"connect: "} + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/// The driver: N connections of one protocol to one node.
/// What the asks address and carry: agents `<prefix><i>`, i < agents, and one body.
struct workload {
  std::string prefix = "bench/e";
  std::string body = R"({"op":"ping","n":1})";
};

class driver {
public:
  driver(proto p, uint16_t port, const std::string& token, int connections, int agents,
         const workload& w = {})
      : p_(p), agents_(agents), body_(w.body) {
    conns_.resize(static_cast<size_t>(connections));
    for (auto& c : conns_) {
      c.fd = connect_tcp(port);
      if (p_ == proto::binary) {
        // hello, answered before the connection turns non-blocking.
        wire::append_frame(c.out, wire::request{c.next_id++, 0, wire::hello{1, token}});
        write_all(c);
        auto r = read_one_binary_blocking(c);
        if (!r.ok)
          die("hello refused: " + r.text);
      }
      ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    }
    for (int i = 0; i < agents; ++i) {
      const auto& body = w.body;
      http_req_.push_back("POST /v1/agents/" + w.prefix + std::to_string(i)
                          + "/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token
                          + "\r\nContent-Type: application/json\r\nContent-Length: "
                          + std::to_string(body.size()) + "\r\n\r\n" + body);
      agent_ids_.push_back(w.prefix + std::to_string(i));
    }
  }

  ~driver() {
    for (auto& c : conns_)
      if (c.fd >= 0)
        ::close(c.fd);
  }

  /// Queues one ask on `c`, due at `due` (its latency counts from then).
  void issue(conn& c, clock_type::time_point due) {
    auto agent = static_cast<size_t>(c.k++ % static_cast<uint64_t>(agents_));
    if (p_ == proto::http) {
      c.out += http_req_[agent];
      c.sent_fifo.push_back(due);
    } else {
      auto id = c.next_id++;
      wire::append_frame(c.out,
                         wire::request{id, 0, wire::ask{agent_ids_[agent], body_, 0, "", 0}});
      c.sent_by_id.emplace(id, due);
    }
    ++c.in_flight;
  }

  /// One poll round (at most `wait_ms`); calls `on_answer(conn&, latency_s)` per answer.
  template <class F>
  void step(int wait_ms, F on_answer) {
    pfds_.resize(conns_.size());
    for (size_t i = 0; i < conns_.size(); ++i) {
      auto& c = conns_[i];
      short ev = 0;
      if (c.in_flight > 0)
        ev |= POLLIN;
      if (c.out_off < c.out.size())
        ev |= POLLOUT;
      pfds_[i] = pollfd{c.fd, ev, 0};
    }
    auto n = ::poll(pfds_.data(), pfds_.size(), wait_ms);
    if (n < 0 && errno != EINTR)
      die(std::string{"poll: "} + std::strerror(errno));
    for (size_t i = 0; i < conns_.size() && n > 0; ++i) {
      auto& c = conns_[i];
      auto re = pfds_[i].revents;
      if (re == 0)
        continue;
      if (re & (POLLERR | POLLHUP))
        die("the node closed a connection");
      if (re & POLLOUT)
        flush(c);
      if (re & POLLIN) {
        char buf[64 * 1024];
        auto r = ::recv(c.fd, buf, sizeof buf, 0);
        if (r == 0)
          die("the node closed a connection");
        if (r < 0) {
          if (errno == EAGAIN || errno == EINTR)
            continue;
          die(std::string{"recv: "} + std::strerror(errno));
        }
        c.in.append(buf, static_cast<size_t>(r));
        parse(c, on_answer);
      }
    }
  }

  void flush(conn& c) {
    while (c.out_off < c.out.size()) {
      auto r = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR)
          return;
        die(std::string{"send: "} + std::strerror(errno));
      }
      c.out_off += static_cast<size_t>(r);
    }
    c.out.clear();
    c.out_off = 0;
  }

  void flush_all() {
    for (auto& c : conns_)
      flush(c);
  }

  std::vector<conn>& conns() {
    return conns_;
  }

  int in_flight() const {
    int n = 0;
    for (auto& c : conns_)
      n += c.in_flight;
    return n;
  }

  uint64_t failures = 0;
  std::string first_failure;

private:
  template <class F>
  void parse(conn& c, F& on_answer) {
    auto now = clock_type::now();
    for (;;) {
      std::string_view rest{c.in.data() + c.in_off, c.in.size() - c.in_off};
      if (p_ == proto::http) {
        auto hdr_end = rest.find("\r\n\r\n");
        if (hdr_end == std::string_view::npos)
          break;
        auto head = rest.substr(0, hdr_end);
        size_t len = 0;
        auto cl = head.find("Content-Length: ");
        if (cl == std::string_view::npos)
          cl = head.find("content-length: ");
        if (cl != std::string_view::npos)
          len = std::strtoul(std::string{head.substr(cl + 16, 12)}.c_str(), nullptr, 10);
        if (rest.size() < hdr_end + 4 + len)
          break;
        bool ok = head.substr(0, 12) == "HTTP/1.1 200";
        if (!ok && failures++ == 0)
          first_failure = std::string{rest.substr(0, std::min<size_t>(400, hdr_end + 4 + len))};
        c.in_off += hdr_end + 4 + len;
        auto due = c.sent_fifo.front();
        c.sent_fifo.pop_front();
        --c.in_flight;
        on_answer(c, duration<double>(now - due).count());
      } else {
        auto f = wire::next_frame(rest, 1 << 24);
        if (!f)
          die("bad frame from the node: " + describe(f.error()));
        if (f->consumed == 0)
          break;
        auto r = wire::decode_response(f->payload);
        if (!r)
          die("bad answer from the node: " + describe(r.error()));
        c.in_off += f->consumed;
        if (!r->ok && failures++ == 0)
          first_failure = std::string{to_string(r->code)} + ": " + r->text;
        auto i = c.sent_by_id.find(r->id);
        if (i == c.sent_by_id.end())
          die("answer to unknown request " + std::to_string(r->id));
        auto due = i->second;
        c.sent_by_id.erase(i);
        --c.in_flight;
        on_answer(c, duration<double>(now - due).count());
      }
    }
    if (c.in_off == c.in.size()) {
      c.in.clear();
      c.in_off = 0;
    }
  }

  void write_all(conn& c) {
    while (c.out_off < c.out.size()) {
      auto r = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (r <= 0)
        die(std::string{"send: "} + std::strerror(errno));
      c.out_off += static_cast<size_t>(r);
    }
    c.out.clear();
    c.out_off = 0;
  }

  wire::response read_one_binary_blocking(conn& c) {
    for (;;) {
      auto f = wire::next_frame(c.in, 1 << 24);
      if (!f)
        die("bad frame: " + describe(f.error()));
      if (f->consumed > 0) {
        auto r = wire::decode_response(f->payload);
        c.in.erase(0, f->consumed);
        if (!r)
          die("bad answer: " + describe(r.error()));
        return *r;
      }
      char buf[4096];
      auto n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n <= 0)
        die("the node closed the connection during hello");
      c.in.append(buf, static_cast<size_t>(n));
    }
  }

  proto p_;
  int agents_;
  std::string body_;
  std::vector<conn> conns_;
  std::vector<pollfd> pfds_;
  std::vector<std::string> http_req_;
  std::vector<std::string> agent_ids_;
};

struct figures {
  double asks_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  uint64_t failures = 0;
};

/// Closed loop: every connection keeps `depth` asks in flight for `seconds` (+ warm-up).
figures closed_loop(proto p, uint16_t port, const std::string& token, int connections, int depth,
                    double seconds, int agents, const workload& w = {}) {
  driver d{p, port, token, connections, agents, w};
  auto t0 = clock_type::now();
  auto warm_end = t0 + std::chrono::milliseconds(300);
  auto end = warm_end + std::chrono::duration_cast<clock_type::duration>(duration<double>(seconds));
  for (auto& c : d.conns())
    for (int i = 0; i < depth; ++i)
      d.issue(c, t0);
  d.flush_all();
  std::vector<double> lat;
  lat.reserve(1 << 20);
  uint64_t counted = 0;
  bool running = true;
  while (running || d.in_flight() > 0) {
    auto now = clock_type::now();
    if (running && now >= end)
      running = false;
    if (!running && now >= end + std::chrono::seconds(10))
      die("answers missing 10 s after the run");
    d.step(100, [&](conn& c, double secs) {
      auto t = clock_type::now();
      if (t >= warm_end && t < end) {
        ++counted;
        if (lat.size() < (size_t{8} << 20))
          lat.push_back(secs);
      }
      if (running)
        d.issue(c, t);
    });
    d.flush_all();
  }
  if (d.failures > 0)
    std::cerr << "  " << d.failures << " failed asks; first: " << d.first_failure << "\n";
  return {static_cast<double>(counted) / seconds, quantile(lat, 0.5) * 1e3,
          quantile(lat, 0.99) * 1e3, d.failures};
}

/// Open loop: `rate` asks per second spread over the connections, for `seconds`.
figures fixed_rate(proto p, uint16_t port, const std::string& token, int connections, int rate,
                   double seconds, int agents) {
  driver d{p, port, token, connections, agents};
  auto interval = std::chrono::duration_cast<clock_type::duration>(duration<double>(1.0 / rate));
  auto t0 = clock_type::now() + std::chrono::milliseconds(50);
  auto total = static_cast<uint64_t>(rate * seconds);
  std::vector<double> lat;
  lat.reserve(total);
  uint64_t issued = 0;
  auto deadline = t0 + std::chrono::duration_cast<clock_type::duration>(duration<double>(seconds))
    + std::chrono::seconds(10);
  while (lat.size() < total) {
    auto now = clock_type::now();
    if (now > deadline)
      die("fixed-rate run: answers missing 10 s after the run");
    while (issued < total && t0 + interval * static_cast<int64_t>(issued) <= now) {
      auto& c = d.conns()[issued % d.conns().size()];
      d.issue(c, t0 + interval * static_cast<int64_t>(issued));
      ++issued;
    }
    d.flush_all();
    auto next_due = t0 + interval * static_cast<int64_t>(issued);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_due - clock_type::now());
    d.step(issued < total ? static_cast<int>(std::clamp<int64_t>(wait.count(), 0, 5)) : 50,
           [&](conn&, double secs) { lat.push_back(secs); });
  }
  if (d.failures > 0)
    std::cerr << "  " << d.failures << " failed asks; first: " << d.first_failure << "\n";
  return {static_cast<double>(lat.size()) / seconds, quantile(lat, 0.5) * 1e3,
          quantile(lat, 0.99) * 1e3, d.failures};
}

/// One member of a benchmark cluster.
struct member_proc {
  pid_t pid = -1;
  uint16_t http_port = 0;
  uint16_t binary_port = 0;
  uint16_t cluster_port = 0;
};

/// Starts `agent-node` with HTTP, binary and metrics listeners on ephemeral ports, rate limits
/// lifted, `extra` flags appended; with `cluster`, also a cluster endpoint.
member_proc start_member(const std::string& node_bin, const std::string& name,
                         const std::string& data, const std::string& key_file,
                         const std::vector<std::string>& extra, bool cluster = true) {
  int out[2];
  if (::pipe(out) != 0)
    die("pipe failed");
  std::vector<std::string> args{node_bin,
                                "--name",
                                name,
                                "--data-dir",
                                data,
                                "--gateway",
                                "127.0.0.1:0",
                                "--binary",
                                "127.0.0.1:0",
                                "--metrics",
                                "127.0.0.1:0",
                                "--admin-key-file",
                                key_file,
                                "--log-level",
                                "warn",
                                "--set",
                                "quota.requests_per_s=10000000",
                                "--set",
                                "quota.burst_requests=10000000"};
  if (cluster) {
    args.push_back("--cluster");
    args.push_back("127.0.0.1:0");
  }
  args.insert(args.end(), extra.begin(), extra.end());
  member_proc n;
  n.pid = ::fork();
  if (n.pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(node_bin.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string line;
  char ch;
  while (::read(out[0], &ch, 1) == 1 && ch != '\n')
    line.push_back(ch);
  ::close(out[0]);
  std::smatch m;
  if (!std::regex_search(line, m, std::regex{"gateway https?://[^ ]+:([0-9]+)"}))
    die("agent-node (" + node_bin + ") did not start: " + line);
  n.http_port = static_cast<uint16_t>(std::stoi(m[1]));
  if (!std::regex_search(line, m, std::regex{"binary (?:tcp|tls)://[^ ]+:([0-9]+)"}))
    die("agent-node printed no binary port: " + line);
  n.binary_port = static_cast<uint16_t>(std::stoi(m[1]));
  if (cluster) {
    if (!std::regex_search(line, m, std::regex{" cluster [^ ]+:([0-9]+)"}))
      die("agent-node printed no cluster port: " + line);
    n.cluster_port = static_cast<uint16_t>(std::stoi(m[1]));
  }
  return n;
}

/// The body of a blocking `GET path` (Connection: close).
std::string http_get(uint16_t port, const std::string& path, const std::string& token) {
  int fd = connect_tcp(port);
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token
    + "\r\nConnection: close\r\n\r\n";
  (void)::write(fd, req.data(), req.size());
  std::string resp;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return resp;
}

} // namespace

int run_replicated(const replicated_options& opts, const char* argv0) {
  auto node_bin = opts.node_binary;
  if (node_bin.empty())
    node_bin =
      (std::filesystem::path{argv0}.parent_path() / ".." / "nodes" / "agent-node").string();
  std::string token;
  {
    std::random_device rd;
    const char* hex = "0123456789abcdef";
    for (int i = 0; i < 48; ++i)
      token.push_back(hex[rd() % 16]);
  }
  std::printf("agent-bench replicated: 3 agent-node processes on 127.0.0.1, %d journaled "
              "counters, writes {\"op\":\"add\"} over the binary protocol to one node (the "
              "others forward), one in flight per writer; %d runs of %.1f s per row "
              "(medians)\n",
              opts.agents, opts.runs, opts.seconds);
  // figures[factor][writers] over the runs
  std::map<int, std::map<int, std::vector<figures>>> got;
  int rc = 0;
  for (int r = 0; r < opts.runs; ++r)
    for (int factor : opts.factors) {
      char tmpl[] = "/tmp/hive-replbench-XXXXXX";
      std::string dir = ::mkdtemp(tmpl);
      auto key_file = dir + "/admin.key";
      std::ofstream{key_file} << token << "\n";
      std::vector<std::string> extra{"--set", "replication.factor=" + std::to_string(factor),
                                     "--set", "cluster.rebalance_migrations_per_s=0"};
      std::vector<member_proc> members;
      members.push_back(start_member(node_bin, "n1", dir + "/n1", key_file, extra));
      auto seeded = extra;
      seeded.push_back("--seed");
      seeded.push_back("127.0.0.1:" + std::to_string(members[0].cluster_port));
      members.push_back(start_member(node_bin, "n2", dir + "/n2", key_file, seeded));
      members.push_back(start_member(node_bin, "n3", dir + "/n3", key_file, seeded));
      auto formed = [&] {
        for (auto& m : members) {
          auto body = http_get(m.http_port, "/v1/cluster/nodes", token);
          size_t ups = 0;
          for (size_t at = 0; (at = body.find("\"status\":\"up\"", at)) != std::string::npos; ++at)
            ++ups;
          if (ups < 3)
            return false;
        }
        return true;
      };
      auto t0 = clock_type::now();
      while (!formed()) {
        if (clock_type::now() - t0 > std::chrono::seconds(20))
          die("the benchmark cluster did not form");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      {
        auto c = binary_client::connect("127.0.0.1", members[0].binary_port, token);
        if (!c)
          die("binary connect: " + describe(c.error()));
        for (int i = 0; i < opts.agents; ++i) {
          auto s = c->spawn({"bench/w" + std::to_string(i), "counter", "", false, "", ""});
          if (!s)
            die("spawn: " + describe(s.error()));
        }
      }
      workload w{"bench/w", R"({"op":"add","by":1})"};
      for (int writers : opts.writers) {
        std::fprintf(stderr, "\r  run %d/%d: R=%d, %4d writers ...", r + 1, opts.runs, factor,
                     writers);
        auto f = closed_loop(proto::binary, members[0].binary_port, token, writers, 1, opts.seconds,
                             opts.agents, w);
        if (f.failures > 0)
          rc = 1;
        got[factor][writers].push_back(f);
      }
      for (auto& m : members)
        ::kill(m.pid, SIGKILL);
      for (auto& m : members) {
        int status = 0;
        ::waitpid(m.pid, &status, 0);
      }
      std::filesystem::remove_all(dir);
    }
  std::fprintf(stderr, "\r%70s\r", "");
  nlohmann::json out{{"scenario", "replicated"},
                     {"runs", opts.runs},
                     {"seconds", opts.seconds},
                     {"agents", opts.agents},
                     {"rows", nlohmann::json::array()}};
  std::printf("\n| writers | R | acks/s (runs) | median acks/s | p50 ms | p99 ms |\n");
  std::printf("| ---: | ---: | --- | ---: | ---: | ---: |\n");
  for (int writers : opts.writers)
    for (int factor : opts.factors) {
      auto& fs = got[factor][writers];
      std::vector<double> rate, p50, p99;
      std::string each;
      for (auto& f : fs) {
        rate.push_back(f.asks_per_s);
        p50.push_back(f.p50_ms);
        p99.push_back(f.p99_ms);
        each += (each.empty() ? "" : " / ") + std::to_string(static_cast<long>(f.asks_per_s));
      }
      std::printf("| %d | %d | %s | %.0f | %.3f | %.3f |\n", writers, factor, each.c_str(),
                  median(rate), median(p50), median(p99));
      out["rows"].push_back({{"writers", writers},
                             {"factor", factor},
                             {"acks_per_s", rate},
                             {"p50_ms", p50},
                             {"p99_ms", p99}});
    }
  if (opts.factors.size() >= 2) {
    auto lo = opts.factors.front();
    auto hi = opts.factors.back();
    std::printf("\nR=%d vs R=%d, median acks/s:", hi, lo);
    for (int writers : opts.writers) {
      std::vector<double> a, b;
      for (auto& f : got[hi][writers])
        a.push_back(f.asks_per_s);
      for (auto& f : got[lo][writers])
        b.push_back(f.asks_per_s);
      std::printf(" %.2fx (%d writers)", median(a) / median(b), writers);
    }
    std::printf("\n");
  }
  if (!opts.json_file.empty())
    std::ofstream{opts.json_file} << out.dump(2) << "\n";
  return rc;
}

int run_gateway(const gateway_options& opts, const char* argv0) {
  auto node_bin = opts.node_binary;
  if (node_bin.empty())
    node_bin =
      (std::filesystem::path{argv0}.parent_path() / ".." / "nodes" / "agent-node").string();
  char tmpl[] = "/tmp/hive-gwbench-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string token;
  {
    std::random_device rd;
    const char* hex = "0123456789abcdef";
    for (int i = 0; i < 48; ++i)
      token.push_back(hex[rd() % 16]);
  }
  auto key_file = dir + "/admin.key";
  std::ofstream{key_file} << token << "\n";
  auto threads = std::to_string(opts.gateway_threads);
  auto node =
    start_member(node_bin, "bench-gw", dir + "/data", key_file,
                 {"--set", "gateway.threads=" + threads, "--set", "binary.threads=" + threads,
                  "--set", "gateway.connections_max=4096", "--set", "binary.connections_max=4096"},
                 false);
  int rc = 0;
  {
    auto c = binary_client::connect("127.0.0.1", node.binary_port, token);
    if (!c)
      die("binary connect: " + describe(c.error()));
    for (int i = 0; i < opts.agents; ++i) {
      auto s = c->spawn({"bench/e" + std::to_string(i), "echo", "", false, "", ""});
      if (!s)
        die("spawn: " + describe(s.error()));
    }
  }
  std::printf("agent-bench gateway: node pid %d, HTTP port %u, binary port %u; %d echo agents, "
              "%d runs of %.1f s per row (medians), gateway threads %d\n",
              node.pid, node.http_port, node.binary_port, opts.agents, opts.runs, opts.seconds,
              opts.gateway_threads);
  struct row {
    std::string protocol;
    int connections;
    int depth;
    std::vector<double> rate, p50, p99;
    uint64_t failures = 0;
  };
  std::vector<row> rows;
  for (int conns : opts.connections) {
    rows.push_back({"http", conns, 1, {}, {}, {}});
    rows.push_back({"binary", conns, 1, {}, {}, {}});
    if (opts.depth > 1)
      rows.push_back({"binary", conns, opts.depth, {}, {}, {}});
  }
  for (int r = 0; r < opts.runs; ++r)
    for (auto& x : rows) {
      std::fprintf(stderr, "\r  run %d/%d: %-6s %4d conns x %-3d in flight ...", r + 1, opts.runs,
                   x.protocol.c_str(), x.connections, x.depth);
      auto f = closed_loop(x.protocol == "http" ? proto::http : proto::binary,
                           x.protocol == "http" ? node.http_port : node.binary_port, token,
                           x.connections, x.depth, opts.seconds, opts.agents);
      x.rate.push_back(f.asks_per_s);
      x.p50.push_back(f.p50_ms);
      x.p99.push_back(f.p99_ms);
      x.failures += f.failures;
    }
  std::fprintf(stderr, "\r%70s\r", "");
  std::printf("\n| protocol | connections | in flight each | asks/s | p50 ms | p99 ms |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
  nlohmann::json out{{"scenario", "gateway"},
                     {"runs", opts.runs},
                     {"seconds", opts.seconds},
                     {"agents", opts.agents},
                     {"closed_loop", nlohmann::json::array()}};
  for (auto& x : rows) {
    std::printf("| %s | %d | %d | %.0f | %.3f | %.3f |\n", x.protocol.c_str(), x.connections,
                x.depth, median(x.rate), median(x.p50), median(x.p99));
    out["closed_loop"].push_back({{"protocol", x.protocol},
                                  {"connections", x.connections},
                                  {"depth", x.depth},
                                  {"asks_per_s", x.rate},
                                  {"p50_ms", x.p50},
                                  {"p99_ms", x.p99},
                                  {"failures", x.failures}});
    if (x.failures > 0)
      rc = 1;
  }
  if (opts.rate > 0) {
    std::printf("\n| protocol | fixed rate | seconds | p50 ms | p99 ms | max of runs p99 ms |\n");
    std::printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    out["fixed_rate"] = nlohmann::json::array();
    for (auto p : {proto::http, proto::binary}) {
      std::vector<double> p50, p99;
      uint64_t failures = 0;
      for (int r = 0; r < opts.runs; ++r) {
        std::fprintf(stderr, "\r  fixed rate run %d/%d (%s) ...", r + 1, opts.runs,
                     p == proto::http ? "http" : "binary");
        auto f = fixed_rate(p, p == proto::http ? node.http_port : node.binary_port, token, 4,
                            opts.rate, opts.rate_seconds, opts.agents);
        p50.push_back(f.p50_ms);
        p99.push_back(f.p99_ms);
        failures += f.failures;
      }
      std::fprintf(stderr, "\r%60s\r", "");
      auto name = p == proto::http ? "http" : "binary";
      std::printf("| %s | %d/s | %.0f | %.3f | %.3f | %.3f |\n", name, opts.rate, opts.rate_seconds,
                  median(p50), median(p99), *std::max_element(p99.begin(), p99.end()));
      out["fixed_rate"].push_back({{"protocol", name},
                                   {"rate", opts.rate},
                                   {"seconds", opts.rate_seconds},
                                   {"p50_ms", p50},
                                   {"p99_ms", p99},
                                   {"failures", failures}});
      if (failures > 0)
        rc = 1;
    }
  }
  ::kill(node.pid, SIGTERM);
  int status = 0;
  ::waitpid(node.pid, &status, 0);
  std::filesystem::remove_all(dir);
  if (!opts.json_file.empty())
    std::ofstream{opts.json_file} << out.dump(2) << "\n";
  return rc;
}

} // namespace hive::bench
