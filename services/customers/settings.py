from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class CustomersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CUSTOMERS_", extra="ignore", populate_by_name=True)

    port: int = Field(8001, description="HTTP port")
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/coworking_customers", description="PostgreSQL URL")
    timezone: str = Field("UTC", description="The space's time zone: contract dates are days in this zone")
    scheduler_interval_s: float = Field(30.0, description="How often the lifecycle scheduler looks for due changes")
