from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class VisitorsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VISITORS_", extra="ignore", populate_by_name=True)

    port: int = Field(8003, description="HTTP port")
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/coworking_visitors", description="PostgreSQL URL")
    timezone: str = Field("UTC", description="The space's time zone: `date=` filters and times in emails use it")
    space_address: str = Field(
        "[the space's address: set VISITORS_SPACE_ADDRESS]",
        description="The space's address, written in the visitor's registration email",
    )
    no_show_after_minutes: int = Field(
        120, ge=1, description="A visit still expected this long after its expected arrival becomes a no-show"
    )
    retention_days: int = Field(
        365, ge=1, description="A visitor's personal data is anonymised this long after their last visit ended"
    )
    scheduler_interval_s: float = Field(30.0, gt=0, description="How often the scheduler looks for due changes")
    scheduler_batch_size: int = Field(200, ge=1, description="Visits (or visitors) the scheduler changes at once")
