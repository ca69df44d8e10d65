"""A restricted function for untrusted code: every .remote() call runs in a
fresh sandbox with no network, no API access and a 30 s timeout, destroyed
afterwards. Arguments and results travel as JSON (never pickle: docs/python.md)."""
import sandvm

app = sandvm.App("restricted-example")


@app.function(restrict_modal_access=True, max_inputs=1, timeout=30, block_network=True)
def run_untrusted_code(code: str):
    namespace = {}
    exec(code, namespace)
    return namespace.get("result")


if __name__ == "__main__":
    code = """
def fibonacci(n):
    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)

result = fibonacci(10)
"""
    print(run_untrusted_code.remote(code))  # 55
