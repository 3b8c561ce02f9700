from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class VisitorsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VISITORS_", extra="ignore", populate_by_name=True)

    port: int = Field(8003, description="HTTP port")
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/coworking_visitors", description="PostgreSQL URL")
