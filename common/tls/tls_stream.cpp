#include "common/tls/tls_stream.h"

#include <openssl/err.h>

#include <cerrno>
#include <climits>

namespace sidetrace::tls {

namespace asio = boost::asio;

TlsStream::TlsStream(asio::ip::tcp::socket socket, asio::ssl::context& ctx, Role role) : socket_(std::move(socket)) {
  error_code ignored;
  socket_.non_blocking(true, ignored);
  ssl_ = SSL_new(ctx.native_handle());
  if (ssl_ == nullptr) return;  // every operation then fails (Classify)
  SSL_set_fd(ssl_, static_cast<int>(socket_.native_handle()));  // BIO_NOCLOSE: the socket owns the fd
  if (role == Role::kClient) {
    SSL_set_connect_state(ssl_);
  } else {
    SSL_set_accept_state(ssl_);
  }
  SSL_set_read_ahead(ssl_, 1);
  SSL_set_default_read_buffer_len(ssl_, kReadAhead);
  SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

void TlsStream::Classify(int ret, error_code& ec) {
  int saved_errno = errno;
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
      want_write_ = false;
      ec = asio::error::would_block;
      return;
    case SSL_ERROR_WANT_WRITE:
      want_write_ = true;
      ec = asio::error::would_block;
      return;
    case SSL_ERROR_ZERO_RETURN:
      ec = asio::error::eof;
      break;
    case SSL_ERROR_SYSCALL:
      if (unsigned long e = ERR_peek_last_error(); e != 0) {
        ec = error_code(static_cast<int>(e), asio::error::get_ssl_category());
      } else if (saved_errno != 0) {
        ec = error_code(saved_errno, asio::error::get_system_category());
      } else {
        ec = asio::ssl::error::stream_truncated;
      }
      break;
    default: {
      unsigned long e = ERR_peek_last_error();
      if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ec = asio::ssl::error::stream_truncated;
      } else {
        ec = error_code(static_cast<int>(e), asio::error::get_ssl_category());
      }
    }
  }
  ERR_clear_error();  // keeps the queue empty for the next call's SSL_get_error
}

size_t TlsStream::ReadSome(void* data, size_t size, error_code& ec) {
  ec = {};
  if (!socket_.is_open() || ssl_ == nullptr) {
    ec = asio::error::bad_descriptor;
    return 0;
  }
  char* p = static_cast<char*>(data);
  size_t got = 0;
  while (got < size) {
    size_t n = 0;
    errno = 0;
    if (int r = SSL_read_ex(ssl_, p + got, size - got, &n); r <= 0) {
      Classify(r, ec);
      // What was read is returned now; a pending error repeats on the next call.
      if (got > 0) ec = {};
      return got;
    }
    got += n;
  }
  return got;
}

size_t TlsStream::WriteSome(const void* data, size_t size, error_code& ec) {
  ec = {};
  if (!socket_.is_open() || ssl_ == nullptr) {
    ec = asio::error::bad_descriptor;
    return 0;
  }
  if (size == 0) return 0;
  size_t n = 0;
  errno = 0;
  if (int r = SSL_write_ex(ssl_, data, size, &n); r <= 0) {
    Classify(r, ec);
    return 0;
  }
  return n;
}

size_t TlsStream::Handshake(error_code& ec) {
  ec = {};
  if (!socket_.is_open() || ssl_ == nullptr) {
    ec = asio::error::bad_descriptor;
    return 0;
  }
  errno = 0;
  if (int r = SSL_do_handshake(ssl_); r != 1) Classify(r, ec);
  return 0;
}

size_t TlsStream::Shutdown(error_code& ec) {
  ec = {};
  if (!socket_.is_open() || ssl_ == nullptr) {
    ec = asio::error::bad_descriptor;
    return 0;
  }
  if (!close_notify_sent_) {
    errno = 0;
    if (int r = SSL_shutdown(ssl_); r < 0) {
      Classify(r, ec);
      return 0;
    }
    close_notify_sent_ = true;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    ec = {};
  }
  // Closing with unread bytes would make the kernel reset the connection,
  // which can destroy the reply before the peer reads it: read to the end.
  std::array<char, 4096> drop;
  for (;;) {
    socket_.read_some(asio::buffer(drop), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      want_write_ = false;
      ec = asio::error::would_block;
      return 0;
    }
    if (ec == asio::error::eof) {  // the peer closed: done
      ec = {};
      return 0;
    }
    if (ec) return 0;
  }
}

}  // namespace sidetrace::tls
