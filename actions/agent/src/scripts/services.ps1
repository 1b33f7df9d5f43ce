function Get-Services {
    $list = @(Get-CsWindowsService -ExcludeActivityLevel | ForEach-Object {
        [ordered]@{ name = [string]$_.Name; status = [string]$_.Status }
    })
    return ,$list
}
