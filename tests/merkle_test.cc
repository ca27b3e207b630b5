// The Merkle tree (common/merkle.h) and signed checkpoints (common/checkpoint.h): known answers from
// RFC 6962's test vectors and RFC 8032, and every proof of every small tree against a plain recursive
// reading of RFC 9162's definitions.
#include <gtest/gtest.h>

#include <map>

#include "common/base64.h"
#include "common/checkpoint.h"
#include "common/merkle.h"

namespace mailark {
namespace {

std::string unhex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

// MTH(D[n]) exactly as RFC 9162 2.1.1 writes it, over leaf hashes.
Digest reference_root(const std::vector<Digest>& leaves, std::size_t begin, std::size_t end) {
  const std::size_t n = end - begin;
  if (n == 1) return leaves[begin];
  std::size_t k = 1;
  while (k * 2 < n) k *= 2;
  return merkle::node_hash(reference_root(leaves, begin, begin + k), reference_root(leaves, begin + k, end));
}

// A tree kept as the archive keeps it: what each leaf completes, from Frontier::push.
struct StoredTree {
  std::map<std::pair<unsigned, std::uint64_t>, Digest> nodes;
  merkle::Frontier frontier;
  std::vector<Digest> leaves;
  void add(std::string_view entry) {
    const Digest leaf = merkle::leaf_hash(entry);
    std::vector<Digest> completed;
    const std::uint64_t index = frontier.size();
    frontier.push(leaf, &completed);
    leaves.push_back(leaf);
    for (unsigned level = 0; level < completed.size(); ++level)
      nodes[{level, ((index + 1) >> level) - 1}] = completed[level];
  }
  merkle::NodeFn fn() const {
    return [this](unsigned level, std::uint64_t index) -> Result<Digest> {
      auto it = nodes.find({level, index});
      if (it == nodes.end()) return make_error(ErrorCode::kNotFound, "no node");
      return it->second;
    };
  }
};

TEST(Merkle, RootsMatchTheRfc6962TestVectors) {
  const char* leaves[] = {"", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"};
  const char* roots[] = {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                         "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                         "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
                         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                         "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
                         "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
                         "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
                         "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
  EXPECT_EQ(to_hex(merkle::empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  StoredTree tree;
  for (int i = 0; i < 8; ++i) {
    tree.add(unhex(leaves[i]));
    EXPECT_EQ(to_hex(tree.frontier.root()), roots[i]) << "size " << i + 1;
    auto r = merkle::root(i + 1, tree.fn());
    ASSERT_TRUE(r) << r.error().context;
    EXPECT_EQ(to_hex(*r), roots[i]) << "size " << i + 1;
  }
}

TEST(Merkle, EveryInclusionAndConsistencyProofOfSmallTreesChecks) {
  StoredTree tree;
  for (int i = 0; i < 70; ++i) tree.add("record " + std::to_string(i));
  for (std::uint64_t n = 1; n <= 70; ++n) {
    const Digest root = reference_root(tree.leaves, 0, n);
    auto stored_root = merkle::root(n, tree.fn());
    ASSERT_TRUE(stored_root);
    ASSERT_EQ(*stored_root, root) << n;
    auto f = merkle::Frontier::of(n, tree.fn());
    ASSERT_TRUE(f);
    ASSERT_EQ(f->root(), root) << n;
    for (std::uint64_t m = 0; m < n; ++m) {
      auto proof = merkle::inclusion_proof(m, n, tree.fn());
      ASSERT_TRUE(proof) << proof.error().context;
      ASSERT_TRUE(merkle::verify_inclusion(m, n, tree.leaves[m], *proof, root)) << m << " in " << n;
      // Another leaf, another position, a changed hash or a shorter proof never check.
      ASSERT_FALSE(merkle::verify_inclusion(m, n, tree.leaves[(m + 1) % 70], *proof, root)) << m << " in " << n;
      if (n > 1) {
        ASSERT_FALSE(merkle::verify_inclusion((m + 1) % n, n, tree.leaves[m], *proof, root)) << m << " in " << n;
      }
      if (!proof->empty()) {
        auto bent = *proof;
        bent.back()[5] ^= 1;
        ASSERT_FALSE(merkle::verify_inclusion(m, n, tree.leaves[m], bent, root));
        bent = *proof;
        bent.pop_back();
        ASSERT_FALSE(merkle::verify_inclusion(m, n, tree.leaves[m], bent, root));
      }
    }
    for (std::uint64_t m = 1; m <= n; ++m) {
      const Digest old_root = reference_root(tree.leaves, 0, m);
      auto proof = merkle::consistency_proof(m, n, tree.fn());
      ASSERT_TRUE(proof) << proof.error().context;
      ASSERT_TRUE(merkle::verify_consistency(m, n, old_root, root, *proof)) << m << " to " << n;
      if (m < n) {
        Digest other = old_root;
        other[0] ^= 1;
        ASSERT_FALSE(merkle::verify_consistency(m, n, other, root, *proof)) << m << " to " << n;
        ASSERT_FALSE(merkle::verify_consistency(m, n, old_root, other, *proof)) << m << " to " << n;
        auto bent = *proof;
        bent.front()[7] ^= 1;
        ASSERT_FALSE(merkle::verify_consistency(m, n, old_root, root, bent)) << m << " to " << n;
      }
    }
  }
  EXPECT_FALSE(merkle::inclusion_proof(5, 5, tree.fn()));
  EXPECT_FALSE(merkle::consistency_proof(0, 5, tree.fn()));
  EXPECT_FALSE(merkle::consistency_proof(6, 5, tree.fn()));
}

TEST(Checkpoint, Ed25519MatchesRfc8032AndSignedNotesCheck) {
  // RFC 8032 section 7.1, test 1 (the empty message).
  auto key = SigningKey::from_seed(unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"));
  ASSERT_TRUE(key);
  EXPECT_EQ(to_hex(key->public_key()), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  EXPECT_EQ(to_hex(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(key->sign("").data()), 64)),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
  // The same signature with the group order L added to S (the same point equation, another string) is
  // refused: signatures are not malleable.
  {
    const std::string sig = key->sign("");
    EXPECT_TRUE(ed25519_verify(key->public_key(), "", sig));
    static const std::uint8_t kOrder[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
                                            0xa2, 0xde, 0xf9, 0xde, 0x14, 0,    0,    0,    0,    0,    0,
                                            0,    0,    0,    0,    0,    0,    0,    0,    0,    0x10};
    std::string bent = sig;
    unsigned carry = 0;
    for (int i = 0; i < 32; ++i) {
      const unsigned v = static_cast<std::uint8_t>(bent[32 + i]) + kOrder[i] + carry;
      bent[32 + i] = static_cast<char>(v & 0xFF);
      carry = v >> 8;
    }
    ASSERT_EQ(carry, 0u);
    EXPECT_FALSE(ed25519_verify(key->public_key(), "", bent));
  }

  Checkpoint c;
  c.origin = "mailark.archive/00112233445566778899aabbccddeeff";
  c.size = 12345;
  c.root = sha256("root");
  c.time = 1764500000;
  const std::string text = checkpoint_text(c);
  const std::string note = sign_note(text, c.origin, *key);
  NoteVerifier verifier{c.origin, key->public_key()};
  auto parsed_key = parse_verifier_key(verifier.text());
  ASSERT_TRUE(parsed_key) << parsed_key.error().context;
  EXPECT_EQ(parsed_key->key, key->public_key());

  auto n = parse_note(note);
  ASSERT_TRUE(n) << n.error().context;
  EXPECT_EQ(n->text, text);
  EXPECT_TRUE(note_signed_by(*n, *parsed_key));
  auto back = parse_checkpoint_text(n->text);
  ASSERT_TRUE(back) << back.error().context;
  EXPECT_EQ(back->origin, c.origin);
  EXPECT_EQ(back->size, c.size);
  EXPECT_EQ(back->root, c.root);
  EXPECT_EQ(back->time, c.time);

  // One changed byte anywhere in the text, and the signature no longer checks.
  for (std::size_t i = 0; i < text.size(); ++i) {
    std::string bent = note;
    bent[i] = bent[i] == '1' ? '2' : '1';
    auto bn = parse_note(bent);
    if (bn) {
      EXPECT_FALSE(note_signed_by(*bn, *parsed_key)) << "byte " << i;
    }
  }
  // Another key with the same name does not check it either.
  auto other = SigningKey::from_seed(std::string(32, 'x'));
  ASSERT_TRUE(other);
  EXPECT_FALSE(note_signed_by(*n, NoteVerifier{c.origin, other->public_key()}));

  // The signature's base64 in another spelling of the same bytes (an unused low bit of its last
  // character set) is a changed note, refused.
  {
    const auto dash = note.rfind(' ');
    std::string other_spelling = note;
    std::size_t last = other_spelling.find('=', dash);
    ASSERT_NE(last, std::string::npos);
    // The last character before the padding carries two bits it does not use: set the lowest.
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const auto value = alphabet.find(other_spelling[last - 1]);
    ASSERT_NE(value, std::string::npos);
    other_spelling[last - 1] = alphabet[value ^ 1];
    auto raw_a = base64_decode(note.substr(dash + 1, note.size() - dash - 2));
    auto raw_b = base64_decode(other_spelling.substr(dash + 1, other_spelling.size() - dash - 2));
    ASSERT_TRUE(raw_a && raw_b);
    ASSERT_EQ(*raw_a, *raw_b) << "68 bytes of base64 end in a character with two unused bits";
    EXPECT_FALSE(parse_note(other_spelling)) << "the same signature spelled another way";
  }
  // Bounded: a well-formed, well-signed note is refused once it is longer than kMaxNoteBytes.
  {
    const std::string small = sign_note(text + std::string(1000, 'x') + "\n", c.origin, *key);
    const std::string large = sign_note(text + std::string(kMaxNoteBytes, 'x') + "\n", c.origin, *key);
    EXPECT_TRUE(parse_note(small));
    EXPECT_FALSE(parse_note(large)) << "a note past kMaxNoteBytes";
  }
  EXPECT_FALSE(parse_note("no newline"));
  EXPECT_FALSE(parse_note("text\n\nnot a signature\n"));
  EXPECT_FALSE(parse_checkpoint_text("origin\n012\nAAAA\n"));
  EXPECT_FALSE(parse_checkpoint_text("origin\n12\nnot base64\n"));
  EXPECT_FALSE(parse_verifier_key("name+00000000+AQ=="));
}

// base64 as the checkpoints, exports, SMTP AUTH and IMAP AUTHENTICATE read it (common/base64.cc):
// every length round-trips; RFC 4648's vectors; the unused bits of the last character are ignored (a
// client's odd encoder); anything but the alphabet with padding at the end is refused.
TEST(Base64, RoundTripsVectorsAndRefusesWhatIsNotBase64) {
  std::string bytes;
  for (int n = 0; n <= 70; ++n) {
    const std::string text = base64_encode(bytes);
    auto back = base64_decode(text);
    ASSERT_TRUE(back) << n;
    EXPECT_EQ(*back, bytes) << n;
    bytes.push_back(static_cast<char>((n * 37 + 11) & 0xFF));
  }
  const std::pair<const char*, const char*> rfc4648[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},  {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, text] : rfc4648) {
    EXPECT_EQ(base64_encode(plain), text);
    EXPECT_EQ(base64_decode(text).value_or("(refused)"), plain);
  }
  // "Zh==", "Zm9vZ/==" and "Zm9=" set bits that "Zg==", "Zm9vZw==" and "Zm8=" leave clear: the same bytes.
  EXPECT_EQ(base64_decode("Zh==").value_or("(refused)"), "f");
  EXPECT_EQ(base64_decode("Zm9vZ/==").value_or("(refused)"), "foog");
  EXPECT_EQ(base64_decode("Zm9=").value_or("(refused)"), "fo");
  EXPECT_EQ(base64_decode("Zm9vYmF/").value_or("(refused)"), std::string("fooba\x7F"));
  for (const char* bad : {"Zg=", "Zg", "Z===", "Zg==Zg==", "Zm=v", "Zm9v\r\n", "Zm 9", "Zm9-", "Zm9_", "====", "Zg=a"})
    EXPECT_FALSE(base64_decode(bad)) << bad;
  EXPECT_FALSE(base64_decode("Zm9vYmFy", 4));  // longer than the caller allows
  EXPECT_TRUE(base64_decode("Zm9vYmFy", 8));
}

}  // namespace
}  // namespace mailark
