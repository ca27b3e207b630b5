// What reading a text in Unicode's compatibility form costs (common/unicode_form.h), against
// libunistring's u8_normalize of the whole text, which compatibility_form calls only for the pieces
// around code points the form may change. Texts of about 4 KB as mail bodies have them: English with
// no-break spaces, German, Chinese with full-width punctuation, Japanese with full-width letters and
// half-width katakana, and plain ASCII. Then what cutting Thai into words costs (ICU's dictionary
// breaks, indexer/word_breaks.h sea_words) against the compatibility form of the same text. The
// search column is search_form, the whole form the index reads words in.
// docs/BENCHMARKS.md "One word written two ways".
//
//   build-dev/bench/unicode_form
#include <uninorm.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "common/unicode_form.h"
#include "indexer/word_breaks.h"

// Nanoseconds a byte of `text` that `fn` takes, over `rounds` calls.
template <typename Fn>
double ns_per_byte(const std::string& text, int rounds, Fn fn) {
  std::size_t total = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < rounds; ++k) total += fn();
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  if (total == 0) std::printf("?");
  return ns / rounds / static_cast<double>(text.size());
}

int main() {
  auto repeat = [](const std::string& s) {
    std::string out;
    while (out.size() < 4000) out += s;
    return out;
  };
  const std::vector<std::pair<const char*, std::string>> texts = {
      {"ASCII", repeat("Please find the attached report on the gas pipeline for review. ")},
      {"English, no-break spaces", repeat("Please find the attached report on the gas pipeline.\xC2\xA0")},
      {"German", repeat("Sehr geehrte Frau M\xC3\xBCller, f\xC3\xBCr Ihre R\xC3\xBC" "ckfrage zur Gr\xC3\xB6\xC3\x9F" "e danke ich. ")},
      {"Chinese", repeat("全新原装进口，送货上门，台湾鑫龙商贸集团公司向您拜年！")},
      {"Japanese, full-width", repeat("価格はＰＣ１２３モデルで、ｶﾀｶﾅの説明です。")},
      {"French", repeat("Veuillez trouver ci-joint le résumé de la réunion de février à Genève. ")},
      {"Russian", repeat("Пожалуйста, найдите в приложении отчёт о поставках газа за этот год. ")},
  };
  // form: compatibility_form; search: search_form, the form the index reads words in (the
  // compatibility form, soft hyphens, the sharp s, the final sigma and marks set aside).
  std::printf("%-26s %8s %14s %14s %14s %8s\n", "text", "bytes", "form ns/byte", "search ns/byte", "whole ns/byte", "ratio");
  for (const auto& [name, text] : texts) {
    const double form = ns_per_byte(text, 20000, [&] {
      std::string out;
      return mailark::compatibility_form(text, out) ? out.size() : text.size();
    });
    const double search = ns_per_byte(text, 20000, [&] {
      std::string out;
      return mailark::search_form(text, out) ? out.size() : text.size();
    });
    const double whole = ns_per_byte(text, 20000, [&] {
      std::size_t length = 0;
      std::uint8_t* r = u8_normalize(UNINORM_NFKC, reinterpret_cast<const std::uint8_t*>(text.data()), text.size(),
                                     nullptr, &length);
      std::free(r);
      return length;
    });
    const double ns[3] = {form, search, whole};
    std::printf("%-26s %8zu %14.2f %14.2f %14.2f %8.2f\n", name, text.size(), ns[0], ns[1], ns[2], ns[2] / ns[0]);
  }
  const std::string thai = repeat("ผมกินน้ำทุกวันและทำงานที่กรุงเทพ ยินดีต้อนรับสู่ประเทศไทย ");
  (void)mailark::indexer::sea_words(thai);  // ICU loaded and its dictionary read once, outside the timing
  const double cut = ns_per_byte(thai, 2000, [&] { return mailark::indexer::sea_words(thai).size(); });
  const double form = ns_per_byte(thai, 2000, [&] {
    std::string out;
    return mailark::compatibility_form(thai, out) ? out.size() : thai.size();
  });
  const double ns[2] = {cut, form};
  std::printf("Thai: %zu bytes, cut into words %.2f ns a byte, compatibility form %.2f\n", thai.size(), ns[0], ns[1]);
}
