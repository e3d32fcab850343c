// TlsStream: one side of a TLS connection (the backend's ingest server, the
// orchestrator's forwarder as client) with OpenSSL reading and writing the
// TCP socket's file descriptor itself, usable by Boost.Beast as an
// AsyncReadStream / AsyncWriteStream.
//
// Why not asio::ssl::stream: it feeds OpenSSL through a memory BIO pair
// from a fixed 17 KiB buffer, so a 1.2 MB ingest body costs ~75 socket
// reads, each one asio completion through the connection's strand, one
// SSL_read and an ERR_clear_error (and, sending, ~75 completions and two
// extra copies of every byte through the BIO pair). Here a write encrypts
// as much as the socket takes in one SSL_write. Here OpenSSL reads ahead up to
// kReadAhead bytes per recv() (a socket BIO on the non-blocking socket), and
// ReadSome() decrypts everything already received straight into the
// caller's buffer without any completion; the stream waits for the socket
// (one async_wait) only when it is drained. OpenSSL's buffers are released
// while a connection is idle (SSL_MODE_RELEASE_BUFFERS): an idle
// connection does not hold its read-ahead buffer.
//
// A client sets the peer name (tls::SetPeerName: SNI and the name the
// certificate must carry) on native_handle() before async_handshake.
//
// Semantics as asio::ssl::stream's: async_handshake (either side),
// async_read_some (asio::error::eof on the peer's close_notify,
// ssl::error::stream_truncated when the TCP connection ends without one),
// async_write_some, async_shutdown (sends close_notify, then reads and drops
// whatever still arrives until the peer closes; bound it with a deadline
// that closes the socket). An operation that needs no wait completes
// through a post, never inside the call that started it. Closing socket()
// fails the pending operation (and every later one: bad_descriptor).
//
// Thread-safety: like asio's streams: at most one read and one write
// operation at a time, all started and completed on the socket's executor
// (the connection's strand).
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <array>
#include <cstddef>
#include <utility>

namespace sidetrace::tls {

class TlsStream {
 public:
  using executor_type = boost::asio::ip::tcp::socket::executor_type;
  using error_code = boost::system::error_code;
  // Bytes OpenSSL asks the kernel for per recv() (four 16 KiB records;
  // 192 KiB and 512 KiB measured no cheaper).
  static constexpr size_t kReadAhead = 64 * 1024;

  enum class Role { kServer, kClient };

  // `socket` is connected (a client's) or accepted (a server's).
  TlsStream(boost::asio::ip::tcp::socket socket, boost::asio::ssl::context& ctx, Role role = Role::kServer);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  executor_type get_executor() { return socket_.get_executor(); }
  boost::asio::ip::tcp::socket& socket() { return socket_; }
  SSL* native_handle() { return ssl_; }

  // Decrypts what has arrived into [data, data + size) until it is full or
  // the socket has no more: the bytes read. 0 with `ec` set when nothing
  // could be read: would_block (then AsyncWait and call again), eof,
  // stream_truncated or another error.
  size_t ReadSome(void* data, size_t size, error_code& ec);
  // Encrypts and sends as much of [data, data + size) as the socket takes
  // now; 0 and would_block when it takes nothing (then AsyncWait).
  size_t WriteSome(const void* data, size_t size, error_code& ec);
  // Waits until the socket is ready for what the last would_block needed
  // (a read can need a write and a write a read: TLS 1.3 key updates).
  template <class Handler>
  void AsyncWait(Handler&& handler) {
    socket_.async_wait(want_write_ ? boost::asio::socket_base::wait_write : boost::asio::socket_base::wait_read,
                       std::forward<Handler>(handler));
  }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    boost::asio::mutable_buffer b = First<boost::asio::mutable_buffer>(buffers);
    return Start<true>([b](TlsStream& s, error_code& ec) { return s.ReadSome(b.data(), b.size(), ec); },
                       std::forward<Token>(token));
  }

  // A small buffer sequence (a response's header pieces and body) is
  // gathered into one record rather than one record per piece.
  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    boost::asio::const_buffer b = First<boost::asio::const_buffer>(buffers);
    size_t total = boost::asio::buffer_size(buffers);
    if (b.size() < total && b.size() < kGather) {
      return Start<true>(
          [buffers](TlsStream& s, error_code& ec) {
            size_t n = boost::asio::buffer_copy(boost::asio::buffer(s.gather_), buffers);
            return s.WriteSome(s.gather_.data(), n, ec);
          },
          std::forward<Token>(token));
    }
    return Start<true>([b](TlsStream& s, error_code& ec) { return s.WriteSome(b.data(), b.size(), ec); },
                       std::forward<Token>(token));
  }

  template <class Token>
  auto async_handshake(Token&& token) {
    return Start<false>([](TlsStream& s, error_code& ec) { return s.Handshake(ec); }, std::forward<Token>(token));
  }

  template <class Token>
  auto async_shutdown(Token&& token) {
    return Start<false>([](TlsStream& s, error_code& ec) { return s.Shutdown(ec); }, std::forward<Token>(token));
  }

 private:
  static constexpr size_t kGather = 16 * 1024;

  template <class Buffer, class Sequence>
  static Buffer First(const Sequence& buffers) {
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it)
      if (Buffer b(*it); b.size() > 0) return b;
    return Buffer();
  }

  // Runs `step` (a non-blocking attempt) until it does not need a wait.
  template <bool kWithSize, class Step>
  struct Op {
    TlsStream& s;
    Step step;
    enum { kStart, kWaiting, kPosted } state = kStart;
    error_code result;
    size_t n = 0;

    template <class Self>
    void operator()(Self& self, error_code ec = {}) {
      if (state == kPosted) return Complete(self, result, n);
      if (ec) return Complete(self, ec, 0);  // the wait failed: closed or cancelled
      n = step(s, result);
      if (result == boost::asio::error::would_block) {
        result = {};
        state = kWaiting;
        return s.AsyncWait(std::move(self));
      }
      if (state == kStart) {  // never complete inside the initiating call
        state = kPosted;
        return boost::asio::post(std::move(self));
      }
      Complete(self, result, n);
    }
    template <class Self>
    static void Complete(Self& self, error_code ec, size_t n) {
      if constexpr (kWithSize) {
        self.complete(ec, n);
      } else {
        (void)n;
        self.complete(ec);
      }
    }
  };

  template <bool kWithSize, class Step, class Token>
  auto Start(Step step, Token&& token) {
    using Signature = std::conditional_t<kWithSize, void(error_code, size_t), void(error_code)>;
    return boost::asio::async_compose<Token, Signature>(Op<kWithSize, Step>{*this, std::move(step), Op<kWithSize, Step>::kStart, {}, 0}, token, socket_);
  }

  size_t Handshake(error_code& ec);
  size_t Shutdown(error_code& ec);
  // After an SSL call returned `ret` <= 0: sets `ec` (would_block with
  // want_write_ for the direction to wait for).
  void Classify(int ret, error_code& ec);

  boost::asio::ip::tcp::socket socket_;
  SSL* ssl_ = nullptr;
  bool want_write_ = false;
  bool close_notify_sent_ = false;
  std::array<char, kGather> gather_;
};

}  // namespace sidetrace::tls
