#include "api/tls.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <memory>

namespace mailark::api {
namespace {

template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};

Error ssl_error(const std::string& what) {
  return make_error(ErrorCode::kInternal, "generating the TLS certificate: " + what);
}

}  // namespace

Result<std::pair<std::string, std::string>> ensure_self_signed(const std::string& dir, const std::string& hostname) {
  namespace fs = std::filesystem;
  std::string cert_path = dir + "/cert.pem", key_path = dir + "/key.pem";
  std::error_code ec;
  if (fs::exists(cert_path, ec) && fs::exists(key_path, ec)) return std::make_pair(cert_path, key_path);
  fs::create_directories(dir, ec);
  if (ec) return make_error(ErrorCode::kIo, "creating " + dir + ": " + ec.message());

  std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>> key(EVP_EC_gen("P-256"));
  if (!key) return ssl_error("EC key");
  std::unique_ptr<X509, Deleter<X509_free>> x509(X509_new());
  if (!x509) return ssl_error("X509_new");
  X509_set_version(x509.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7F;
  std::unique_ptr<BIGNUM, Deleter<BN_free>> bn(BN_bin2bn(serial, sizeof serial, nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x509.get()));
  X509_gmtime_adj(X509_getm_notBefore(x509.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x509.get()), 10L * 365 * 24 * 3600);
  X509_set_pubkey(x509.get(), key.get());
  X509_NAME* name = X509_get_subject_name(x509.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("mailark"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(hostname.c_str()), -1,
                             -1, 0);
  X509_set_issuer_name(x509.get(), name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x509.get(), x509.get(), nullptr, nullptr, 0);
  std::string san = "DNS:" + hostname;
  std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>> ext(
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, san.c_str()));
  if (ext) X509_add_ext(x509.get(), ext.get(), -1);
  if (!X509_sign(x509.get(), key.get(), EVP_sha256())) return ssl_error("signing");

  // The key first, private from its creation; the certificate last, so a crash in between is redone.
  std::string key_tmp = key_path + ".tmp", cert_tmp = cert_path + ".tmp";
  mode_t old = ::umask(077);
  FILE* kf = std::fopen(key_tmp.c_str(), "w");
  ::umask(old);
  if (!kf) return make_error(ErrorCode::kIo, "writing " + key_tmp);
  bool ok = PEM_write_PrivateKey(kf, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  ok = std::fclose(kf) == 0 && ok;
  FILE* cf = std::fopen(cert_tmp.c_str(), "w");
  if (!cf) return make_error(ErrorCode::kIo, "writing " + cert_tmp);
  ok = PEM_write_X509(cf, x509.get()) == 1 && ok;
  ok = std::fclose(cf) == 0 && ok;
  if (!ok) return make_error(ErrorCode::kIo, "writing the TLS key and certificate in " + dir);
  fs::rename(key_tmp, key_path, ec);
  if (!ec) fs::rename(cert_tmp, cert_path, ec);
  if (ec) return make_error(ErrorCode::kIo, "installing the TLS key and certificate: " + ec.message());
  return std::make_pair(cert_path, key_path);
}

Status use_server_certificate(asio::ssl::context& ssl, const std::string& cert, const std::string& key) {
  asio::error_code ec;
  ssl.use_certificate_chain_file(cert, ec);
  if (ec) return make_error(ErrorCode::kIo, "loading the TLS certificate " + cert + ": " + ec.message());
  ssl.use_private_key_file(key, asio::ssl::context::pem, ec);
  if (ec) return make_error(ErrorCode::kIo, "loading the TLS key " + key + ": " + ec.message());
  if (SSL_CTX_check_private_key(ssl.native_handle()) != 1)
    return make_error(ErrorCode::kInvalidArgument, "the TLS key " + key + " does not belong to the certificate " + cert);
  return ok_status();
}

}  // namespace mailark::api
