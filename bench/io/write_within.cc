// What api/write.h's bound costs a write: 100,000 SMTP-sized answers (31 bytes) written to a loopback
// peer that reads them all, by write_within and by a plain asio::async_write, alternated twice in one
// run (docs/BENCHMARKS.md "Bounded writes").
//
//   build/bench/write_within
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "api/write.h"

int main() {
  asio::io_context io;
  asio::ip::tcp::socket server{io}, client{io};
  asio::ip::tcp::acceptor acc(io, {asio::ip::make_address("127.0.0.1"), 0});
  client.connect(acc.local_endpoint());
  acc.accept(server);
  std::thread reader([&] {
    std::vector<char> b(1 << 16);
    asio::error_code ec;
    while (!ec) client.read_some(asio::buffer(b), ec);
  });
  const std::string answer = "250 2.0.0 Ok: queued as 12345\r\n";
  constexpr int kWrites = 100000;
  for (int round = 0; round < 4; ++round) {
    const bool bounded = round % 2 == 0;
    const auto t0 = std::chrono::steady_clock::now();
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (int i = 0; i < kWrites; ++i) {
            if (bounded)
              co_await mailark::api::write_within(server, asio::buffer(answer), std::chrono::seconds(2));
            else
              co_await asio::async_write(server, asio::buffer(answer), asio::use_awaitable);
          }
        },
        asio::detached);
    io.run();
    io.restart();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kWrites;
    std::printf("%s %.2f us a write\n", bounded ? "write_within      " : "asio::async_write ", us);
  }
  asio::error_code ec;
  server.shutdown(asio::socket_base::shutdown_both, ec);
  server.close(ec);
  reader.join();
}
