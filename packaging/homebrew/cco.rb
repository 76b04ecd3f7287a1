# Homebrew formula for cco. Socket activation is launchd's job, not `brew services`
# (which would start the daemon eagerly with KeepAlive), hence the caveat.
class Cco < Formula
  desc "Claude Code Orchestra: socket-activated orchestration for Claude Code"
  homepage "https://example.invalid/cco"
  url "https://example.invalid/cco/archive/refs/tags/v0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "MIT"
  head "https://example.invalid/cco.git", branch: "main"

  depends_on "rust" => :build

  def install
    system "cargo", "install", *std_cargo_args
    pkgshare.install "launchd", "packaging/daemon.toml"
  end

  def caveats
    <<~EOS
      Register the daemon and sidecar sockets with launchd (once per user):
        cco install
      launchd then starts them on first use. To remove them: cco uninstall
    EOS
  end

  test do
    assert_match "cco #{version}", shell_output("#{bin}/cco version")
    assert_match "dev.cco.daemon", shell_output("#{bin}/cco install --dry-run 2>&1", 0)
  end
end
