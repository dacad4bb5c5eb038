"""The one table the health check reads: ``role``, as in the report's ``Role.objects.count()``."""

from __future__ import annotations

from sqlalchemy import String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Role(Base):
    __tablename__ = "role"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


#: ``SELECT count(*) FROM role``, built once: the statement every health check sends.
COUNT_ROLES = select(func.count()).select_from(Role)
