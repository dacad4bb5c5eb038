from django.db import models


class Role(models.Model):
    """The table the report's view counts. It is the lab's ``role`` table (the lab creates and
    seeds it), so Django does not manage it: ``migrate`` leaves it alone."""

    name = models.CharField(max_length=64, unique=True)

    class Meta:
        db_table = "role"
        managed = False
