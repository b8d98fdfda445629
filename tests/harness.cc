// Anchor so the harness library exists even when tests/harness is empty.
namespace braid::test {
int harnessAnchor() { return 0; }
}  // namespace braid::test
