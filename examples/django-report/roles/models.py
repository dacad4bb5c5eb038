from django.db import models


class Role(models.Model):
    """The table the report's view counts, created by this app's own migration (``migrate``), as
    the report's project has it; the lab gives the project an empty database of its own."""

    name = models.CharField(max_length=64, unique=True)

    class Meta:
        db_table = "role"
