"""A directory snapshot sealed with a customer-supplied key (CSEK): the key
(32 bytes here; 16..512 are accepted) is never stored by sandboxd, so the image
can only be mounted by whoever holds it."""
import os

import sandvm

app = sandvm.App.lookup("examples", create_if_missing=True)
key = os.urandom(32)

sb = sandvm.Sandbox.create(app=app)
sb.mkdir("/project", parents=True)
with sb.open("/project/secret.txt", "w") as f:
    f.write("private data\n")
image = sb.snapshot_directory("/project", _experimental_encryption_key=key)
print("image", image.object_id)
sb.terminate()

sb2 = sandvm.Sandbox.create(app=app)
# Another key mounts nothing.
try:
    sb2.mount_image("/project", sandvm.Image.from_id(image.object_id), _experimental_encryption_key=os.urandom(32))
except sandvm.PermissionDeniedError as e:
    print("refused:", e)
sb2.mount_image("/project", image, _experimental_encryption_key=key)
with sb2.open("/project/secret.txt") as f:
    print(f.read(), end="")  # private data
sb2.terminate()
