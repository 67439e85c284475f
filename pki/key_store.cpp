// The device's private key in a 0600 PEM file, and crash-safe file writing (temp file, fsync,
// rename, fsync of the directory) shared by the CA's files.
#include "pki/key_store.hpp"

#include "pki/file_io.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace torii::pki {

namespace {

namespace fs = std::filesystem;

std::string errno_text(int e) {
  return std::strerror(e);
}

// A name beside `path` no other writer picks: same directory, so rename() stays atomic.
fs::path temp_name(const fs::path& path) {
  unsigned char r[8];
  if (RAND_bytes(r, sizeof r) != 1) throw PkiError("RAND_bytes failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string suffix = ".tmp.";
  for (auto c : r) {
    suffix.push_back(kHex[c >> 4]);
    suffix.push_back(kHex[c & 15]);
  }
  fs::path tmp = path;
  tmp += suffix;
  return tmp;
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw PkiError("cannot open directory " + dir.string() + ": " + errno_text(errno));
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) throw PkiError("cannot fsync directory " + dir.string() + ": " + errno_text(e));
}

// Creates a new temp file holding `data` with exactly `mode` (set on the descriptor before any
// byte is written, so a key is never readable by others, not even briefly) and syncs it.
fs::path write_temp(const fs::path& path, std::string_view data, unsigned mode,
                    bool durable = true) {
  fs::path tmp = temp_name(path);
  // Created 0600 whatever `mode` says; widened with fchmod only after creation. O_NOFOLLOW and
  // O_EXCL: never write through a planted symlink or into someone else's file.
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw PkiError("cannot create " + tmp.string() + ": " + errno_text(errno));
  auto fail = [&](const std::string& what) {
    int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw PkiError(what + " " + tmp.string() + ": " + errno_text(e));
  };
  // fchmod rather than relying on open's mode, which the umask could narrow (0644 -> 0600).
  if (::fchmod(fd, mode & 0777) != 0) fail("cannot chmod");
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot write");
    off += static_cast<size_t>(n);
  }
  if (durable && ::fsync(fd) != 0) fail("cannot fsync");
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw PkiError("cannot close " + tmp.string() + ": " + errno_text(e));
  }
  return tmp;
}

// Like write_file_atomic, but fails if `path` exists: link() publishes the synced temp file
// atomically and, unlike rename(), refuses to replace an existing name.
void write_file_exclusive(const fs::path& path, std::string_view data, unsigned mode) {
  fs::path tmp = write_temp(path, data, mode);
  int rc = ::link(tmp.c_str(), path.c_str());
  int e = errno;
  ::unlink(tmp.c_str());
  if (rc != 0) {
    if (e == EEXIST) throw PkiError(path.string() + " already exists; refusing to overwrite it");
    throw PkiError("cannot create " + path.string() + ": " + errno_text(e));
  }
  fsync_dir(path.parent_path());
}

}  // namespace

std::string detail::read_file(const fs::path& path, bool secret) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw PkiError("cannot open " + path.string() + ": " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw PkiError("cannot stat " + path.string() + ": " + errno_text(e));
  }
  if (secret && (st.st_mode & 077) != 0) {
    ::close(fd);
    throw PkiError("key file " + path.string() + " is readable by others; chmod 600 " +
                   path.string());
  }
  if (!S_ISREG(st.st_mode) || st.st_size > off_t{1024} * 1024) {
    ::close(fd);
    throw PkiError(path.string() + " is not a regular file of reasonable size");
  }
  // Sized up front so the key text is not copied around (and left behind) by reallocation.
  SecretText data(std::string(static_cast<size_t>(st.st_size), '\0'));
  size_t off = 0;
  while (off < data.text.size()) {
    ssize_t n = ::read(fd, data.text.data() + off, data.text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw PkiError("cannot read " + path.string() + ": " + errno_text(e));
    }
    if (n == 0) break;  // shrank while reading
    off += static_cast<size_t>(n);
  }
  ::close(fd);
  data.text.resize(off);
  return std::move(data.text);
}

void write_file_atomic(const fs::path& path, std::string_view data, unsigned mode, bool durable) {
  fs::path tmp = write_temp(path, data, mode, durable);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw PkiError("cannot rename " + tmp.string() + " to " + path.string() + ": " + errno_text(e));
  }
  // The rename itself is only durable once the directory entry is on disk.
  if (durable) fsync_dir(path.parent_path());
}

bool FileKeyStore::has_key() const {
  std::error_code ec;
  return fs::exists(path_, ec);
}

void FileKeyStore::generate() {
  if (has_key())
    throw PkiError("key file " + path_.string() + " already exists; refusing to overwrite it");
  std::error_code ec;
  if (path_.has_parent_path() && !fs::exists(path_.parent_path(), ec)) {
    fs::create_directories(path_.parent_path(), ec);
    if (ec) throw PkiError("cannot create " + path_.parent_path().string() + ": " + ec.message());
    fs::permissions(path_.parent_path(), fs::perms::owner_all, ec);
  }
  auto key = generate_p256_key();
  std::string pem = private_key_to_pem(key.get());
  try {
    write_file_exclusive(path_, pem, 0600);
  } catch (...) {
    OPENSSL_cleanse(pem.data(), pem.size());
    throw;
  }
  OPENSSL_cleanse(pem.data(), pem.size());
}

PkeyPtr FileKeyStore::load() const {
  std::error_code ec;
  if (!fs::exists(path_, ec))
    throw PkiError("no device key at " + path_.string() + " (enroll the device first)");
  detail::SecretText pem(detail::read_file(path_, true));
  auto key = private_key_from_pem(pem.text);
  if (!key) throw PkiError("cannot parse key file " + path_.string());
  return key;
}

}  // namespace torii::pki
