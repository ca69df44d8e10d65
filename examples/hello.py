"""Create a sandbox, run a Python one-liner in it, read its stdout."""
import sandvm

app = sandvm.App.lookup("examples", create_if_missing=True)
sb = sandvm.Sandbox.create(app=app)

p = sb.exec("python3", "-c", "print(6 * 7)")
print(p.stdout.read(), end="")  # 42
print("returncode", p.wait())   # 0

sb.terminate()
